"""Align driving poses to the reference person's body.

StableAnimator moves and rescales the driving skeletons so that they sit where the reference person
stands, with the reference's body size. The fit (kept from the reference implementation):
- reference points: the first (most confident) reference person's nose, neck, shoulders, hips,
  knees, ankles, eyes and ears (`REFERENCE_KEYPOINT_IDS`; no elbows or wrists), only those the
  reference shows (score > 0.3);
- driving points: the same joints in every frame that shows exactly one person (their own scores
  are ignored, as in the reference);
- y: least squares ref_y = ay * drv_y + by over all those points (normalised coordinates);
- x: the slope follows from ay so the rescale is isotropic *in pixels*, and bx is the mean residual;
- the same (ax, ay, bx, by) is applied to every frame, every person, body, face and hands.

Fixed here: the reference sets ax = ay, which is only right when the driving frames have the
reference's aspect ratio (it stretches the skeleton otherwise). We use
    ax = ay * (W_drv * H_ref) / (H_drv * W_ref)
with the driving frames' own size, the formula the method was derived with (MimicMotion).

Also unlike the reference, frames with zero people are tolerated, and when no frame shows exactly one
person the most confident person of each frame is used for the fit (with a warning) instead of
crashing. `align_poses(..., enabled=False)` only re-labels frames to the output size.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .keypoints import BODY_SCORE_THRESHOLD, PoseFrame

REFERENCE_KEYPOINT_IDS = (0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)


class AlignmentError(ValueError):
    """The alignment cannot be fitted (no usable reference or driving keypoints)."""


@dataclass(frozen=True)
class AlignmentTransform:
    """p_aligned = p * scale + offset in normalised coordinates; the result lives in a
    `width` x `height` (reference-sized) frame."""

    scale: tuple[float, float]
    offset: tuple[float, float]
    width: int
    height: int

    def apply(self, pose: PoseFrame) -> PoseFrame:
        return pose.transformed(self.scale, self.offset, self.width, self.height)

    @classmethod
    def identity(cls, width: int, height: int) -> "AlignmentTransform":
        return cls((1.0, 1.0), (0.0, 0.0), width, height)


def _driving_size(driving: Sequence[PoseFrame]) -> tuple[int, int]:
    sizes = {(f.width, f.height) for f in driving}
    if len(sizes) != 1:
        raise AlignmentError(
            f"All driving frames must have the same size to be aligned, found sizes {sorted(sizes)}. "
            "Resize the driving frames to one size first."
        )
    return sizes.pop()


def fit_alignment(reference: PoseFrame, driving: Sequence[PoseFrame]) -> AlignmentTransform:
    """Fit the transform mapping driving poses onto the reference body (see the module docstring)."""
    driving = list(driving)
    if not driving:
        raise AlignmentError("No driving frames to align.")
    if reference.num_people == 0:
        raise AlignmentError(
            "No person in the reference pose, so the driving poses cannot be aligned to it. Use a "
            "reference photo showing the person's body, or disable alignment (--no-align)."
        )
    ids = [i for i in REFERENCE_KEYPOINT_IDS if reference.body_scores[0, i] > BODY_SCORE_THRESHOLD]
    ref_points = reference.body[0, ids]
    if len(ids) < 2 or np.ptp(ref_points[:, 1]) == 0:
        raise AlignmentError(
            f"The reference pose shows only {len(ids)} of the body joints the alignment uses "
            "(nose, neck, shoulders, hips, knees, ankles, eyes, ears); at least two at different heights "
            "are needed. Use a reference photo showing more of the body, or disable alignment (--no-align)."
        )
    fw, fh = _driving_size(driving)

    fit_frames = [f.body[0, ids] for f in driving if f.num_people == 1]
    if not fit_frames:
        fit_frames = [f.body[0, ids] for f in driving if f.num_people > 1]
        if not fit_frames:
            raise AlignmentError("No driving frame shows a person, so there is nothing to align.")
        warnings.warn(
            "No driving frame shows exactly one person; the alignment is fitted on the most confident "
            "person of each frame instead.",
            stacklevel=2,
        )
    det = np.stack(fit_frames)  # (F', K, 2), frame-major like the tiled reference below
    if np.ptp(det[..., 1]) == 0:
        raise AlignmentError("The driving keypoints used for alignment all have the same height; cannot fit a scale.")
    ref = np.tile(ref_points[None], (det.shape[0], 1, 1))
    ay, by = np.polyfit(det[..., 1].ravel(), ref[..., 1].ravel(), 1)
    # Isotropic in pixels: the driving frames' aspect ratio against the reference's.
    ax = ay * (fw * reference.height) / (fh * reference.width)
    bx = float(np.mean(ref[..., 0].ravel() - det[..., 0].ravel() * ax))
    return AlignmentTransform((float(ax), float(ay)), (bx, float(by)), reference.width, reference.height)


def align_poses(
    reference: PoseFrame | None,
    driving: Sequence[PoseFrame],
    enabled: bool = True,
) -> tuple[list[PoseFrame], AlignmentTransform]:
    """Align every driving frame to the reference. Returns the aligned frames and the transform.

    With `enabled=False` the coordinates are kept and the frames are only given the reference's size
    (or keep their own when there is no reference): the skeleton then covers the same fraction of the
    output as of the driving frame."""
    driving = list(driving)
    if enabled:
        if reference is None:
            raise AlignmentError("Alignment needs the reference pose; pass it or disable alignment.")
        transform = fit_alignment(reference, driving)
    else:
        width, height = (reference.width, reference.height) if reference is not None else _driving_size(driving)
        transform = AlignmentTransform.identity(width, height)
    return [transform.apply(f) for f in driving], transform
