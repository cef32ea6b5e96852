"""Pair generated and real videos by name, stream each pair frame by frame, and aggregate the metrics.

Frame metrics (L1, PSNR, PSNR*, SSIM, LPIPS, CSIM) are averaged per video and, for the overall figure, over all
frames of all videos (DisCo scores frame files, so its averages pool frames). FVD compares the two sets of
videos: each video is cut into consecutive clips of `fvd_clip_frames` frames and every clip is one sample; only
running sums of the I3D features are kept (`GaussianStats`), never the videos.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import StableAnimatorError
from ..preprocessing.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, iter_frames, natural_key
from . import METRICS
from . import metrics as M
PIXEL_METRICS = {"l1": M.l1, "psnr": M.psnr, "psnr_star": M.psnr_star, "ssim": M.ssim}
FVD_SIZE = 224  # I3D's input size; DisCo resizes every frame to it with PIL bicubic
LPIPS_BATCH = 8


@dataclass
class Settings:
    metrics: tuple[str, ...] = METRICS
    max_frames: int | None = None  # evaluate only the first N frames of every video
    fvd_clip_frames: int = 16  # 0: each whole video is one FVD sample
    lpips_input_range: str = "disco"
    device: str = "cpu"


# ------------------------------------------------------------------------------------------------ pairing
def list_videos(folder: str | os.PathLike, option: str) -> dict[str, Path]:
    """name -> video file or frame folder, for every entry of `folder` that is one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StableAnimatorError(f"{option} {folder} is not a folder; give the folder holding the videos (mp4 files or folders of frames).")
    videos: dict[str, Path] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or entry.suffix.lower() in VIDEO_EXTENSIONS:
            name = entry.name if entry.is_dir() else entry.stem
            if name in videos:
                raise StableAnimatorError(f"{option} {folder} holds two videos named {name!r} ({videos[name].name} and {entry.name}); keep one.")
            videos[name] = entry
    if not videos:
        raise StableAnimatorError(f"{option} {folder} holds no videos: expected mp4 files ({', '.join(VIDEO_EXTENSIONS)}) or folders of frames, paired by name.")
    return videos


def pair_videos(generated: str | os.PathLike, real: str | os.PathLike, real_option: str = "--real") -> list[tuple[str, Path, Path]]:
    gen, ref = list_videos(generated, "--generated"), list_videos(real, real_option)
    for option, folder, names, other_option in (("--generated", generated, sorted(set(gen) - set(ref)), real_option), (real_option, real, sorted(set(ref) - set(gen)), "--generated")):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise StableAnimatorError(f"{option} {folder}: no video of the same name in {other_option} for {shown}; videos are paired by name (without extension): add or rename the missing ones.")
    return [(name, gen[name], ref[name]) for name in gen]


def find_reference(folder: Path, name: str) -> Path:
    for suffix in IMAGE_EXTENSIONS:
        for candidate in (folder / f"{name}{suffix}", folder / f"{name}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise StableAnimatorError(f"--references {folder} has no image named {name} ({'/'.join(IMAGE_EXTENSIONS)}) for the video {name}; add it, or leave out --references to use each real video's first frame.")


# ------------------------------------------------------------------------------------------------ reading
def _frames(path: Path, option: str, max_frames: int | None) -> Iterator[np.ndarray]:
    try:
        yield from iter_frames(path, max_frames=max_frames)
    except StableAnimatorError:
        raise
    except (OSError, ValueError, RuntimeError, IndexError) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise StableAnimatorError(f"{option} video {path} cannot be read ({reason}); re-export it as mp4 or a folder of PNG frames.") from None


def frame_pairs(name: str, generated: Path, real: Path, max_frames: int | None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(index, generated frame, real frame), checking that sizes and frame counts agree."""
    gen_frames, real_frames = _frames(generated, "--generated", max_frames), _frames(real, "--real", max_frames)
    index = 0
    while True:
        g, r = next(gen_frames, None), next(real_frames, None)
        if g is None or r is None:
            if g is None and r is None:
                if index == 0:
                    raise StableAnimatorError(f"--generated video {generated} has no frames; generate it again.")
                return
            rest = 1 + sum(1 for _ in (gen_frames if r is None else real_frames))  # the longer one's remaining frames
            gen_count, real_count = (index + rest, index) if r is None else (index, index + rest)
            raise StableAnimatorError(
                f"{name}: the generated video {generated} has {gen_count} frames but the real video {real} has {real_count}; "
                "generate the same number of frames as the real video (or pass --max-frames to compare only the first ones)."
            )
        if g.shape != r.shape:
            raise StableAnimatorError(
                f"{name}: frame {index} of the generated video {generated} is {g.shape[1]}x{g.shape[0]} but the real video {real} is "
                f"{r.shape[1]}x{r.shape[0]}; resize the generated frames to the real size first (DisCo's protocol resizes them bilinearly)."
            )
        yield index, g, r
        index += 1


def resize_for_i3d(frame: np.ndarray) -> np.ndarray:
    """One frame as 224x224 float32 RGB in 0-255: PIL bicubic on each channel in float, no rounding (clean-fid's
    "PIL bicubic" resizer, which DisCo's FVD uses)."""
    import PIL.Image

    channels = [
        np.asarray(PIL.Image.fromarray(frame[:, :, c].astype(np.float32), mode="F").resize((FVD_SIZE, FVD_SIZE), PIL.Image.BICUBIC))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 255)


# ------------------------------------------------------------------------------------------------ evaluation
class Evaluator:
    """Feed it pairs with `add_video`; read the results with `results()`.

    `lpips` (an `LPIPS`), `i3d` (an `I3D`) and `identity` (an `IdentitySimilarity`) are needed only for the
    metrics that use them."""

    def __init__(self, settings: Settings, lpips=None, i3d=None, identity=None):
        self.settings, self.lpips, self.i3d, self.identity = settings, lpips, i3d, identity
        self.videos: dict[str, dict] = {}
        self._sums = {m: 0.0 for m in METRICS if m != "fvd"}
        self._counts = {m: 0 for m in METRICS if m != "fvd"}
        self._fvd = None
        if "fvd" in settings.metrics:
            self._fvd = {"generated": M.GaussianStats(i3d.logits.conv3d.out_channels), "real": M.GaussianStats(i3d.logits.conv3d.out_channels)}
        self.fvd_short_videos: list[str] = []

    # --- one video
    def add_video(self, name: str, generated: Path, real: Path, reference: Path | None = None) -> dict:
        wanted = self.settings.metrics
        values: dict[str, list[float]] = {m: [] for m in wanted if m != "fvd"}
        no_face: list[int] = []
        reference_has_face = None
        lpips_batch: list[tuple[np.ndarray, np.ndarray]] = []
        clip: dict[str, list[np.ndarray]] = {"generated": [], "real": []}
        clips_done = 0
        for index, g, r in frame_pairs(name, generated, real, self.settings.max_frames):
            for metric, function in PIXEL_METRICS.items():
                if metric in values:
                    values[metric].append(function(g, r))
            if "lpips" in values:
                lpips_batch.append((g, r))
                if len(lpips_batch) == LPIPS_BATCH:
                    values["lpips"] += self._lpips(lpips_batch)
                    lpips_batch = []
            if "csim" in values:
                if index == 0:
                    reference_has_face = self.identity.reference(reference if reference is not None else r)
                score = self.identity.frame(g)
                if score is None:
                    no_face.append(index)
                else:
                    values["csim"].append(score)
            if self._fvd is not None:
                clip["generated"].append(resize_for_i3d(g))
                clip["real"].append(resize_for_i3d(r))
                if len(clip["generated"]) == self.settings.fvd_clip_frames:
                    self._add_clip(clip)
                    clip, clips_done = {"generated": [], "real": []}, clips_done + 1
        frames = index + 1
        if lpips_batch:
            values["lpips"] += self._lpips(lpips_batch)
        if self._fvd is not None and clips_done == 0:  # shorter than one clip: the whole video is the sample
            self._add_clip(clip)
            clips_done = 1
            if self.settings.fvd_clip_frames:
                self.fvd_short_videos.append(name)
        record: dict = {"frames": frames}
        for metric, series in values.items():
            record[metric] = float(np.mean(series)) if series else None
            self._sums[metric] += float(np.sum(series))
            self._counts[metric] += len(series)
        if "csim" in values:
            record["csim_frames_without_face"] = no_face
            record["reference_has_face"] = reference_has_face
        if self._fvd is not None:
            record["fvd_clips"] = clips_done
        self.videos[name] = record
        return record

    def _lpips(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        import torch

        to_tensor = lambda frames: torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255).to(self.settings.device)  # noqa: E731
        with torch.inference_mode():
            distances = self.lpips(to_tensor([g for g, _ in pairs]), to_tensor([r for _, r in pairs]))
        return [float(d) for d in distances.cpu()]

    def _add_clip(self, clip: dict[str, list[np.ndarray]]) -> None:
        import torch

        for side, frames in clip.items():
            video = torch.from_numpy(np.stack(frames)).to(self.settings.device)  # (T, 224, 224, 3) in 0-255
            video = (video / 127.5 - 1).permute(3, 0, 1, 2)[None]  # (1, 3, T, 224, 224) in [-1, 1]
            with torch.inference_mode():
                features = self.i3d(video).double().cpu().numpy()
            self._fvd[side].add(features)

    # --- all videos
    def results(self) -> dict:
        overall: dict = {"videos": len(self.videos), "frames": sum(v["frames"] for v in self.videos.values())}
        for metric in self.settings.metrics:
            if metric == "fvd":
                continue
            overall[metric] = self._sums[metric] / self._counts[metric] if self._counts[metric] else None
        notes = []
        if "csim" in self.settings.metrics:
            missing = sum(len(v["csim_frames_without_face"]) for v in self.videos.values())
            overall["csim_frames_without_face"] = missing
            no_reference = [name for name, v in self.videos.items() if v["reference_has_face"] is False]
            if missing:
                notes.append(f"CSIM: {missing} generated frame(s) without a detected face are left out of the CSIM average (listed per video).")
            if no_reference:
                notes.append(f"CSIM: no face in the reference of {', '.join(no_reference)}; those videos have no CSIM.")
        if self._fvd is not None:
            samples = self._fvd["generated"].n
            overall["fvd_samples"] = samples
            if samples >= 2:
                g, r = self._fvd["generated"], self._fvd["real"]
                overall["fvd"] = M.frechet_distance(g.mean, g.cov, r.mean, r.cov)
            else:
                overall["fvd"] = None
                notes.append("FVD needs at least 2 clips on each side; evaluate more (or longer) videos.")
            if samples < 400:
                notes.append(f"FVD from {samples} clips: with fewer samples than the 400 feature dimensions the covariance is rank-deficient and FVD is biased upwards; compare it only with runs of the same videos and settings.")
            if self.fvd_short_videos:
                notes.append(f"FVD: {len(self.fvd_short_videos)} video(s) shorter than --fvd-clip-frames were used whole: {', '.join(self.fvd_short_videos[:5])}.")
        return {"overall": overall, "videos": self.videos, "notes": notes}
