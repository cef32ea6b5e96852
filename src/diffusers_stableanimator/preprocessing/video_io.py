"""Read driving videos and image folders; write mp4 (h264) and gif.

- Videos (.mp4, .mov, .webm, .mkv, .avi) are decoded with imageio + imageio-ffmpeg (extra `[video]`).
- Image folders: every .png/.jpg/.jpeg/.webp/.bmp file, sorted by the numbers in their names
  ("natural" order: frame_2 before frame_10), so both `frame_<i>.png` and plain `00012.png` work.
- `stride` keeps every stride-th frame and `max_frames` stops after that many kept frames.
- Writes go to a temporary file in the target folder, moved into place once complete (`outputs.atomic_file`),
  so an interrupted write never leaves a truncated file under the final name.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..outputs import atomic_file
from ._common import load_rgb

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _require_imageio():
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary the reader/writer uses)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            'Reading and writing videos needs imageio and imageio-ffmpeg: `pip install "diffusers-stableanimator[video]"`.'
        ) from error
    return imageio


def natural_key(name: str) -> list:
    """Sort key treating digit runs as numbers: 'frame_2.png' < 'frame_10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is not a folder of frames.")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise FileNotFoundError(
            f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in {str(folder)!r}. Expected frames such as "
            "frame_0.png, frame_1.png, ... or 00000.png, 00001.png, ..."
        )
    return sorted(files, key=lambda p: natural_key(p.name))


def _check_sampling(stride: int, max_frames: int | None) -> None:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}.")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 (or None for all), got {max_frames}.")


def iter_frames(source: str | os.PathLike, stride: int = 1, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (H, W, 3) of a video file or an image folder."""
    _check_sampling(stride, max_frames)
    source = Path(source)
    kept = 0
    if source.is_dir():
        for index, path in enumerate(list_frame_files(source)):
            if index % stride:
                continue
            if max_frames is not None and kept >= max_frames:
                return
            yield load_rgb(path)
            kept += 1
        return
    if not source.is_file():
        raise FileNotFoundError(f"Driving video {str(source)!r} does not exist.")
    if source.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(
            f"Unsupported video type {source.suffix!r} for {str(source)!r}; expected one of "
            f"{', '.join(VIDEO_EXTENSIONS)} or a folder of images."
        )
    reader = _open_video(source)
    try:
        for index, frame in enumerate(reader):
            if index % stride:
                continue
            if max_frames is not None and kept >= max_frames:
                return
            yield np.ascontiguousarray(np.asarray(frame)[:, :, :3])
            kept += 1
    finally:
        reader.close()


def _open_video(source: Path):
    imageio = _require_imageio()
    try:
        return imageio.get_reader(str(source), format="FFMPEG")
    except OSError as error:  # ffmpeg's log is long; its last line says what was wrong
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ValueError(f"Cannot read the video {str(source)!r}: {reason} Is it a complete, valid video file?") from None


def read_frames(source: str | os.PathLike, stride: int = 1, max_frames: int | None = None) -> list[np.ndarray]:
    """All (sampled) frames of a video file or image folder as RGB uint8 arrays."""
    frames = list(iter_frames(source, stride, max_frames))
    if not frames:
        raise ValueError(f"No frames could be read from {str(source)!r}.")
    return frames


def video_fps(source: str | os.PathLike) -> float | None:
    """Frames per second of a video file (None for folders or when unknown)."""
    source = Path(source)
    if source.is_dir():
        return None
    reader = _open_video(source)
    try:
        fps = reader.get_meta_data().get("fps")
    finally:
        reader.close()
    return float(fps) if fps else None


def _as_uint8_frames(frames: Sequence[Any]) -> list[np.ndarray]:
    frames = [load_rgb(f) for f in frames]
    if not frames:
        raise ValueError("No frames to write.")
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise ValueError(f"All frames must have the same size to be written as one video, found {sorted(sizes)}.")
    return frames


def write_video(path: str | os.PathLike, frames: Sequence[Any], fps: float = 8.0, quality: int = 8) -> Path:
    """Write RGB frames (arrays or PIL images) to .mp4 (h264, yuv420p) or .gif, atomically.

    h264 with yuv420p needs even sizes: odd widths/heights are padded by one black column/row (with a
    warning)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"write_video writes .mp4 or .gif files, got {str(path)!r}.")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}.")
    frames = _as_uint8_frames(frames)

    def write(tmp: Path) -> None:
        nonlocal frames
        if suffix == ".gif":
            from PIL import Image

            images = [Image.fromarray(f) for f in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
            return
        h, w = frames[0].shape[:2]
        if h % 2 or w % 2:
            warnings.warn(f"Padding {w}x{h} frames to even size for h264.", stacklevel=3)
            frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0))) for f in frames]
        imageio = _require_imageio()
        writer = imageio.get_writer(
            str(tmp), format="FFMPEG", fps=fps, codec="libx264", quality=quality, pixelformat="yuv420p", macro_block_size=1,
        )
        try:
            for f in frames:
                writer.append_data(f)
        finally:
            writer.close()

    return atomic_file(path, write)


def write_image(path: str | os.PathLike, image: Any) -> Path:
    """Write one image (format from the extension) atomically."""
    from PIL import Image

    path = Path(path)
    pixels = Image.fromarray(load_rgb(image))
    return atomic_file(path, lambda tmp: pixels.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG")))


def write_frames(folder: str | os.PathLike, frames: Sequence[Any], pattern: str = "frame_{i}.png") -> list[Path]:
    """Write frames as numbered images `frame_0.png`, `frame_1.png`, ... (the official naming)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_image(folder / pattern.format(i=i), f) for i, f in enumerate(frames)]
