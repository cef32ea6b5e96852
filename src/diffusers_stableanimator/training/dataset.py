"""The training data: one folder per video, laid out as the official StableAnimator training data.

    <video>/images/frame_0.png ...   RGB frames (.png or .jpg; `frame_<i>` or plain integer names)
    <video>/poses/frame_0.png ...    pose skeletons, same stem as the frame
    <video>/faces/frame_0.png ...    face masks (white = face), same stem as the frame
    <video>/face_embedding.npy       raw 512-d ArcFace embedding of the person, computed once per video

A dataset is either a text file listing video folders (one per line, as the official `--data_path` list) or a
folder whose sub-folders are videos.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset

FACE_EMBEDDING_FILE = "face_embedding.npy"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _frame_index(path: Path) -> int:
    match = re.fullmatch(r"(?:frame_)?(\d+)", path.stem)
    if match is None:
        raise ValueError(f"Cannot read a frame number from {path}: name frames `frame_<i>.png` or `<i>.png`.")
    return int(match.group(1))


def list_video_folders(data: str | os.PathLike) -> list[Path]:
    """Video folders from a text file (one path per line; relative paths are relative to the file) or a folder."""
    data = Path(data)
    if data.is_file():
        lines = [line.strip() for line in data.read_text().splitlines()]
        folders = [(data.parent / line) if not os.path.isabs(line) else Path(line) for line in lines if line and not line.startswith("#")]
    elif data.is_dir():
        folders = sorted(p for p in data.iterdir() if (p / "images").is_dir())
    else:
        raise FileNotFoundError(f"Training data {data} does not exist: give a text file of video folders or a folder of videos.")
    if not folders:
        raise ValueError(f"No video folders found in {data}: each video needs an `images/` sub-folder (see docs/training.md).")
    return folders


def sample_clip(num_video_frames: int, num_frames: int, rate: int, rng: random.Random) -> tuple[list[int], int]:
    """
    The reference's sampling: a clip of `num_frames` indices spread over `min(L, (n - 1) * rate + 1)` frames from a
    random start, and a reference frame drawn uniformly from the frames not in the clip (retried with rate 2).
    """
    for current_rate in (rate, 2):
        span = min(num_video_frames, (num_frames - 1) * current_rate + 1)
        start = rng.randint(0, num_video_frames - span)
        clip = np.linspace(start, start + span - 1, num_frames, dtype=int).tolist()
        others = sorted(set(range(num_video_frames)) - set(clip))
        if others:
            return clip, rng.choice(others)
    raise ValueError(
        f"A video with {num_video_frames} frames leaves no frame outside a {num_frames}-frame clip for the reference "
        f"image; use videos with more than {num_frames} frames or a smaller --num-frames."
    )


class StableAnimatorVideoDataset(Dataset):
    r"""
    Clips of `num_frames` frames (stride `frame_rate`) with their poses, face masks, a reference frame from
    outside the clip and the video's cached face embedding.

    Each item: `pixel_values (F, 3, H, W)` and `pose_pixels (F, 3, H, W)` in [-1, 1], `reference_image (3, H, W)`
    in [-1, 1], `face_masks (F, 1, H, W)` in [0, 1], `face_embeds (512,)` float32. A missing pose is black
    (zeros) and a missing mask all ones (the whole frame weighted as face), as in the reference, but with the
    right shape.
    """

    def __init__(self, data: str | os.PathLike, width: int = 512, height: int = 512, num_frames: int = 16, frame_rate: int = 4, seed: int | None = None):
        self.videos = list_video_folders(data)
        self.width, self.height = width, height
        self.num_frames, self.frame_rate = num_frames, frame_rate
        # Without a seed use the `random` module, which the DataLoader re-seeds in every worker.
        self.rng = random.Random(seed) if seed is not None else random
        self.frames = [self._list_frames(video) for video in self.videos]

    @staticmethod
    def _list_frames(video: Path) -> list[Path]:
        frames = [p for p in (video / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if len(frames) < 2:
            raise ValueError(f"{video}/images has {len(frames)} frames; a training video needs at least 2.")
        if not (video / FACE_EMBEDDING_FILE).is_file():
            raise FileNotFoundError(
                f"{video} has no {FACE_EMBEDDING_FILE} (the raw 512-d ArcFace embedding of the person). Create it with "
                "`stableanimator prepare-dataset` or insightface's antelopev2 model (see docs/training.md)."
            )
        return sorted(frames, key=_frame_index)

    def __len__(self) -> int:
        return len(self.videos)

    def _rgb(self, path: Path) -> torch.Tensor:
        image = PIL.Image.open(path).convert("RGB").resize((self.width, self.height))
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0

    def _companion(self, video: Path, folder: str, frame: Path) -> Path | None:
        for suffix in (".png", frame.suffix, ".jpg"):
            path = video / folder / (frame.stem + suffix)
            if path.is_file():
                return path
        return None

    def _pose(self, video: Path, frame: Path) -> torch.Tensor:
        path = self._companion(video, "poses", frame)
        return self._rgb(path) if path else -torch.ones(3, self.height, self.width)  # black in [-1, 1]

    def _mask(self, video: Path, frame: Path) -> torch.Tensor:
        path = self._companion(video, "faces", frame)
        if path is None:
            return torch.ones(1, self.height, self.width)
        mask = PIL.Image.open(path).convert("L").resize((self.width, self.height))
        return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None]

    def __getitem__(self, index: int) -> dict:
        video, frames = self.videos[index], self.frames[index]
        clip, reference = sample_clip(len(frames), self.num_frames, self.frame_rate, self.rng)
        clip_frames = [frames[i] for i in clip]
        face_embeds = np.load(video / FACE_EMBEDDING_FILE).astype(np.float32).reshape(-1)
        return {
            "pixel_values": torch.stack([self._rgb(f) for f in clip_frames]),
            "pose_pixels": torch.stack([self._pose(video, f) for f in clip_frames]),
            "face_masks": torch.stack([self._mask(video, f) for f in clip_frames]),
            "reference_image": self._rgb(frames[reference]),
            "face_embeds": torch.from_numpy(face_embeds),
        }
