"""`PoseFrame`: the whole-body keypoints of one image, and `.npz` save/load for a sequence of them.

Coordinates are *normalised*: x is divided by the image width and y by the image height, like the
poses StableAnimator was trained on. Nothing is clipped, so values may fall outside [0, 1].
After alignment (`alignment.py`) the coordinates live in the reference image's normalised frame and
`width`/`height` are the reference's size.

Layout (N people):
- `body` (N, 18, 2), `body_scores` (N, 18): OpenPose-18 order (0 nose, 1 neck, 2 R shoulder,
  3 R elbow, 4 R wrist, 5 L shoulder, 6 L elbow, 7 L wrist, 8 R hip, 9 R knee, 10 R ankle, 11 L hip,
  12 L knee, 13 L ankle, 14 R eye, 15 L eye, 16 R ear, 17 L ear).
- `faces` (N, 68, 2), `face_scores` (N, 68): the 68 face landmarks.
- `hands` (2N, 21, 2), `hand_scores` (2N, 21): all people's left hands first, then all right hands.
People are ordered by detector confidence, most confident first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# A body joint counts as visible when its score is above this (the drawing's joint test).
BODY_SCORE_THRESHOLD = 0.3


@dataclass
class PoseFrame:
    body: np.ndarray
    body_scores: np.ndarray
    faces: np.ndarray
    face_scores: np.ndarray
    hands: np.ndarray
    hand_scores: np.ndarray
    width: int
    height: int

    def __post_init__(self):
        self.body = np.asarray(self.body, dtype=np.float64).reshape(-1, 18, 2)
        n = self.body.shape[0]
        self.body_scores = np.asarray(self.body_scores, dtype=np.float64).reshape(n, 18)
        self.faces = np.asarray(self.faces, dtype=np.float64).reshape(n, 68, 2)
        self.face_scores = np.asarray(self.face_scores, dtype=np.float64).reshape(n, 68)
        self.hands = np.asarray(self.hands, dtype=np.float64).reshape(2 * n, 21, 2)
        self.hand_scores = np.asarray(self.hand_scores, dtype=np.float64).reshape(2 * n, 21)
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"PoseFrame needs a positive image size, got {self.width}x{self.height}.")

    @property
    def num_people(self) -> int:
        return self.body.shape[0]

    @property
    def body_visible(self) -> np.ndarray:
        """(N, 18) bool: score > 0.3, the official `subset != -1` test."""
        return self.body_scores > BODY_SCORE_THRESHOLD

    @classmethod
    def empty(cls, width: int, height: int) -> "PoseFrame":
        z = np.zeros
        return cls(z((0, 18, 2)), z((0, 18)), z((0, 68, 2)), z((0, 68)), z((0, 21, 2)), z((0, 21)), width, height)

    @classmethod
    def from_wholebody(cls, keypoints: np.ndarray, scores: np.ndarray, width: int, height: int) -> "PoseFrame":
        """Build from OpenPose-ordered whole-body keypoints (N, 134, 2) in pixels and scores (N, 134),
        the output of `dwpose.coco_wholebody_to_openpose`. Feet (18..23) are dropped."""
        keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 134, 2)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1, 134)
        normalised = keypoints / np.array([width, height], dtype=np.float64)
        return cls(
            body=normalised[:, :18],
            body_scores=scores[:, :18],
            faces=normalised[:, 24:92],
            face_scores=scores[:, 24:92],
            hands=np.concatenate([normalised[:, 92:113], normalised[:, 113:134]], axis=0),
            hand_scores=np.concatenate([scores[:, 92:113], scores[:, 113:134]], axis=0),
            width=width,
            height=height,
        )

    def transformed(self, scale: Sequence[float], offset: Sequence[float], width: int, height: int) -> "PoseFrame":
        """Every point p becomes p * scale + offset (scores unchanged), in a frame of size width x height."""
        a = np.asarray(scale, dtype=np.float64)
        b = np.asarray(offset, dtype=np.float64)
        return PoseFrame(
            self.body * a + b, self.body_scores.copy(), self.faces * a + b, self.face_scores.copy(),
            self.hands * a + b, self.hand_scores.copy(), width, height,
        )

    def person(self, index: int) -> "PoseFrame":
        """A frame holding only person `index` (with their two hands)."""
        n = self.num_people
        if not 0 <= index < n:
            raise IndexError(f"person {index} out of range: this frame has {n} people.")
        hands = [index, n + index]
        return PoseFrame(
            self.body[index : index + 1], self.body_scores[index : index + 1],
            self.faces[index : index + 1], self.face_scores[index : index + 1],
            self.hands[hands], self.hand_scores[hands], self.width, self.height,
        )


_ARRAYS = ("body", "body_scores", "faces", "face_scores", "hands", "hand_scores")


def save_poses(path: str | os.PathLike, frames: Sequence[PoseFrame], **extra: np.ndarray) -> None:
    """Save a sequence of frames (any number of people each) to one `.npz`.

    Arrays of all frames are concatenated; `counts[i]` is the number of people in frame i and
    `sizes[i]` its (width, height). Extra named arrays (e.g. the alignment's scale/offset) are stored
    alongside under `extra_<name>`.
    """
    frames = list(frames)
    data = {
        "counts": np.array([f.num_people for f in frames], dtype=np.int64),
        "sizes": np.array([[f.width, f.height] for f in frames], dtype=np.int64).reshape(-1, 2),
    }
    shapes = {"body": (18, 2), "body_scores": (18,), "faces": (68, 2), "face_scores": (68,), "hands": (21, 2), "hand_scores": (21,)}
    for name in _ARRAYS:
        parts = [getattr(f, name) for f in frames]
        data[name] = np.concatenate(parts, axis=0) if parts else np.zeros((0, *shapes[name]))
    for name, value in extra.items():
        data[f"extra_{name}"] = np.asarray(value)
    np.savez(path, **data)


def load_poses(path: str | os.PathLike) -> list[PoseFrame]:
    """Inverse of `save_poses`."""
    with np.load(path) as data:
        missing = [k for k in ("counts", "sizes", *_ARRAYS) if k not in data]
        if missing:
            raise ValueError(f"{path} is not a keypoints file written by save_poses: missing arrays {missing}.")
        counts, sizes = data["counts"], data["sizes"]
        arrays = {k: data[k] for k in _ARRAYS}
    frames, start = [], 0
    for n, (w, h) in zip(counts.tolist(), sizes.tolist()):
        stop = start + n
        hands = np.r_[2 * start : 2 * start + 2 * n]  # each frame holds its 2n hands contiguously
        frames.append(
            PoseFrame(
                arrays["body"][start:stop], arrays["body_scores"][start:stop],
                arrays["faces"][start:stop], arrays["face_scores"][start:stop],
                arrays["hands"][hands], arrays["hand_scores"][hands], w, h,
            )
        )
        start = stop
    return frames
