"""Face boxes per frame, for the HJB face optimisation.

Two sources:
1. The (aligned) DWPose face landmarks of each frame (`face_boxes_from_poses`). The tight box around
   the 68 landmarks (jaw to eyebrows) is smaller than a face detector's box (which includes the
   forehead), so it is widened by a `FaceBoxMargin`. Calibrate it on the reference with
   `FaceBoxMargin.calibrate(reference_pose, detector_box)` so that the reference's landmark box
   grows exactly into the detector's box there; `DEFAULT_FACE_BOX_MARGIN` is used otherwise.
   Frames where the person shows no face landmarks get `None`.
2. Mask images (`face_box_from_mask`), e.g. those of the official `face_mask_extraction.py`: the
   bounding box of the pixels above a threshold (not `== 255`, so anti-aliased, JPEG or resized masks
   work), rescaled from the mask's size to the output size. Empty masks give `None`.

Boxes are `Box`: (x1, y1, x2, y2) integer pixels with x2/y2 *exclusive*, like PIL's crop and numpy slices, clipped
to the image: the one box type of the package (face optimisation, the CLI, `face_boxes.json`). The official
scripts' masks and boxes are inclusive; `inclusive_to_exclusive` is the one place that converts them.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from .keypoints import PoseFrame

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2) in pixels, x2/y2 exclusive like PIL's crop

BOX_CONVENTION = "x2/y2 exclusive"  # recorded in face_boxes.json

# A face landmark counts when its score is above this; fewer than MIN_FACE_POINTS visible points
# is treated as "no face" (a box from two or three stray points is not a face).
FACE_POINT_THRESHOLD = 0.3
MIN_FACE_POINTS = 5


@dataclass(frozen=True)
class FaceBoxMargin:
    """Growth of the landmark box on each side, as fractions of its width (left/right) and height
    (top/bottom)."""

    left: float
    top: float
    right: float
    bottom: float

    @classmethod
    def calibrate(cls, reference: PoseFrame, detector_box: Sequence[float], person: int = 0) -> "FaceBoxMargin":
        """Margins that turn the reference's landmark box into `detector_box` (x1, y1, x2, y2 in the
        reference's pixels, e.g. `FaceAnalyzer.analyze(ref).bbox`)."""
        tight = landmark_box(reference, person)
        if tight is None:
            raise ValueError(
                "The reference pose shows no face landmarks, so the face-box margin cannot be calibrated; "
                "use DEFAULT_FACE_BOX_MARGIN instead."
            )
        x1, y1, x2, y2 = tight
        w, h = x2 - x1, y2 - y1
        dx1, dy1, dx2, dy2 = (float(v) for v in detector_box[:4])
        return cls((x1 - dx1) / w, (y1 - dy1) / h, (dx2 - x2) / w, (dy2 - y2) / h)


# Typical SCRFD box versus the 68-landmark box: the detector box reaches well above the eyebrows.
DEFAULT_FACE_BOX_MARGIN = FaceBoxMargin(left=0.05, top=0.35, right=0.05, bottom=0.05)


def landmark_box(pose: PoseFrame, person: int = 0, threshold: float = FACE_POINT_THRESHOLD):
    """Tight (x1, y1, x2, y2) float box around a person's visible face landmarks, in pixels of the
    frame's own size, or None."""
    if person >= pose.num_people:
        return None
    visible = pose.face_scores[person] > threshold
    if visible.sum() < MIN_FACE_POINTS:
        return None
    points = pose.faces[person, visible] * np.array([pose.width, pose.height])
    (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
    if x2 <= x1 or y2 <= y1:
        return None
    return float(x1), float(y1), float(x2), float(y2)


def inclusive_to_exclusive(box: Sequence[float]) -> tuple:
    """An official-style box whose x2/y2 are the last pixels inside -> a `Box` (x2/y2 one past them)."""
    x1, y1, x2, y2 = box
    return (x1, y1, x2 + 1, y2 + 1)


def _clip_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> Box | None:
    """The pixels that the span [x1, x2] x [y1, y2] touches, as a `Box` clipped to the image."""
    last = (max(0, math.floor(x1)), max(0, math.floor(y1)), min(width - 1, math.ceil(x2)), min(height - 1, math.ceil(y2)))
    if last[2] < last[0] or last[3] < last[1]:
        return None  # the face lies outside the image
    return inclusive_to_exclusive(last)


def face_box_from_pose(
    pose: PoseFrame,
    width: int | None = None,
    height: int | None = None,
    margin: FaceBoxMargin = DEFAULT_FACE_BOX_MARGIN,
    person: int = 0,
) -> Box | None:
    """The face box of `person` (default: the most confident) in an output of size width x height
    (default: the frame's size), or None when the face is not visible."""
    width, height = width or pose.width, height or pose.height
    tight = landmark_box(pose, person)
    if tight is None:
        return None
    x1, y1, x2, y2 = tight
    w, h = x2 - x1, y2 - y1
    sx, sy = width / pose.width, height / pose.height
    return _clip_box(
        (x1 - margin.left * w) * sx, (y1 - margin.top * h) * sy,
        (x2 + margin.right * w) * sx, (y2 + margin.bottom * h) * sy,
        width, height,
    )


def face_boxes_from_poses(
    poses: Sequence[PoseFrame],
    width: int | None = None,
    height: int | None = None,
    margin: FaceBoxMargin = DEFAULT_FACE_BOX_MARGIN,
) -> list[Box | None]:
    return [face_box_from_pose(p, width, height, margin) for p in poses]


def _load_mask(mask: Any) -> np.ndarray:
    if isinstance(mask, (str, os.PathLike)):
        from PIL import Image

        if not os.path.isfile(mask):
            raise FileNotFoundError(f"Mask file {str(mask)!r} does not exist.")
        with Image.open(mask) as image:
            return np.asarray(image.convert("L"))
    if hasattr(mask, "convert"):
        return np.asarray(mask.convert("L"))
    array = np.asarray(mask)
    if array.ndim == 3:  # RGB(A) masks: a pixel is "on" when any colour channel is
        array = array[..., :3].max(axis=2)
    if array.ndim != 2:
        raise ValueError(f"A mask must be an (H, W) or (H, W, C) image, got shape {array.shape}.")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8 and array.max(initial=0) <= 1.0:
        array = array * 255.0  # float masks in [0, 1]
    return array


def face_box_from_mask(mask: Any, width: int | None = None, height: int | None = None, threshold: float = 127.5) -> Box | None:
    """Bounding box of the mask pixels above `threshold` (0-255 scale), rescaled from the mask's size
    to width x height (default: the mask's size). None when no pixel is above the threshold.

    Accepts a path, a PIL image, or an array (uint8 0-255, bool, or float 0-1; RGB is reduced with max).
    """
    array = _load_mask(mask)
    mh, mw = array.shape
    width, height = width or mw, height or mh
    ys, xs = np.nonzero(array > threshold)
    if len(xs) == 0:
        return None
    # Pixel j of the mask covers [j, j+1) in mask units; map that span to output pixels.
    sx, sy = width / mw, height / mh
    return _clip_box(
        xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx - 1, (ys.max() + 1) * sy - 1, width, height
    )


def face_boxes_from_masks(masks: Sequence[Any], width: int | None = None, height: int | None = None, threshold: float = 127.5) -> list[Box | None]:
    return [face_box_from_mask(m, width, height, threshold) for m in masks]


def box_to_mask(box: Box | None, width: int, height: int) -> np.ndarray:
    """A single-channel uint8 (height, width) mask, 255 inside the box, 0 elsewhere (all 0 for None): the mask
    format of the official scripts."""
    mask = np.zeros((height, width), dtype=np.uint8)
    if box is not None:
        x1, y1, x2, y2 = box
        mask[y1:y2, x1:x2] = 255
    return mask


def margin_to_dict(margin: FaceBoxMargin) -> dict:
    return asdict(margin)


def read_face_boxes(path: str | os.PathLike, width: int | None = None, height: int | None = None) -> list[tuple[float, float, float, float] | None]:
    """The boxes of an `extract-poses` `face_boxes.json` as the pipeline's `face_boxes` take them (`Box`, x2/y2
    exclusive), scaled to `width` x `height` (default: the file's size). Files written before `box_convention`
    was recorded hold inclusive boxes and are converted."""
    import json

    from ..errors import StableAnimatorError

    try:
        with open(path) as f:
            summary = json.load(f)
        sx = (width or summary["width"]) / summary["width"]
        sy = (height or summary["height"]) / summary["height"]
        exclusive = summary.get("box_convention") == BOX_CONVENTION
        boxes = [None if b is None else (tuple(b) if exclusive else inclusive_to_exclusive(b)) for b in summary["boxes"]]
        return [None if b is None else (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in boxes]
    except (ValueError, KeyError, TypeError, IndexError, ZeroDivisionError) as error:
        raise StableAnimatorError(f"{path} is not a valid face_boxes.json ({type(error).__name__}: {error}); run extract-poses again to rewrite it.") from None

