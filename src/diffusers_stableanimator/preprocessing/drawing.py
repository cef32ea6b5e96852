"""Skeleton images in the look StableAnimator was trained on.

The pose images are drawn on a large canvas whose short side is 2160 px (stick half-width 4, joint
radius 4, hand lines 2 px, face points radius 3, all in canvas pixels) and then shrunk to the working
size with OpenCV's bilinear `INTER_LINEAR` resize. Drawing at 512 px directly, or shrinking with an
anti-aliasing filter (PIL), gives visibly different, thicker strokes than the training data.

Rules reproduced from the training-time drawing:
- body: 17 limbs (the two shoulder-ear limbs are never drawn), each skipped when either end scores
  < 0.3; colour = palette colour x score_a x score_b (truncated); limbs only are then dimmed by 0.6;
- body joints: drawn when score > 0.3, colour = palette colour x score;
- hands: 20 edges per hand in an HSV rainbow x (score_a x score_b x 255), then 21 blue points;
  face: 68 grey points; no score threshold for hands and face, brightness follows the score;
- a point is drawn only when its integer canvas coordinate is >= 1 on both axes.
Colours below are RGB, and the returned image is RGB.

The official scripts save that picture at the source size (the reference's, after alignment) and load it at the
generation size with PIL's default bicubic resize; `render_pose` reproduces both steps. Frames far smaller than
the canvas (the tiny models' 64 px) lose most strokes that way: `render_pose_small` averages instead.
"""

from __future__ import annotations

import colorsys
import math
from typing import Sequence

import numpy as np

from ._common import require_cv2
from .keypoints import PoseFrame

CANVAS_SHORT_SIDE = 2160
STICK_WIDTH = 4
JOINT_RADIUS = 4
HAND_LINE_THICKNESS = 2
HAND_POINT_RADIUS = 4
FACE_POINT_RADIUS = 3
LIMB_SCORE_THRESHOLD = 0.3  # limbs: both ends >= 0.3
JOINT_SCORE_THRESHOLD = 0.3  # joints: score > 0.3
LIMB_DIMMING = 0.6

# 17 drawn limbs, 0-based OpenPose-18 joint pairs; limb i uses BODY_COLORS[i].
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)


# int(v * 0.6) for every uint8 v, as a lookup table: same truncation as the float multiply, without
# a float copy of the (up to 2160 x 3840) canvas.
_DIMMING_TABLE = (np.arange(256) * LIMB_DIMMING).astype(np.uint8)


def hand_edge_color(edge: int, intensity: int) -> tuple[float, float, float]:
    """RGB float colour of hand edge `edge` at intensity s = int(score_a*score_b*255): the HSV
    rainbow hue edge/20 at full saturation and value, times s. OpenCV rounds it half-to-even."""
    r, g, b = colorsys.hsv_to_rgb(edge / len(HAND_EDGES), 1.0, 1.0)
    return (r * intensity, g * intensity, b * intensity)


def canvas_size(width: int, height: int) -> tuple[int, int]:
    """(canvas width, canvas height): the output size scaled so its short side is 2160."""
    short = min(width, height)
    ratio = CANVAS_SHORT_SIDE / short if short != CANVAS_SHORT_SIDE else 1.0
    return int(width * ratio), int(height * ratio)


def _draw_body(canvas: np.ndarray, pose: PoseFrame) -> None:
    cv2 = require_cv2()
    hc, wc = canvas.shape[:2]
    for i, (a, b) in enumerate(BODY_LIMBS):
        for n in range(pose.num_people):
            sa, sb = pose.body_scores[n, a], pose.body_scores[n, b]
            if sa < LIMB_SCORE_THRESHOLD or sb < LIMB_SCORE_THRESHOLD:
                continue
            xa, ya = pose.body[n, a, 0] * wc, pose.body[n, a, 1] * hc
            xb, yb = pose.body[n, b, 0] * wc, pose.body[n, b, 1] * hc
            center = (int((xa + xb) / 2), int((ya + yb) / 2))
            length = math.hypot(xa - xb, ya - yb)
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            polygon = cv2.ellipse2Poly(center, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
            color = [int(c * sa * sb) for c in BODY_COLORS[i]]
            cv2.fillConvexPoly(canvas, polygon, color)
    canvas[:] = _DIMMING_TABLE[canvas]  # dims the limbs only: joints come after
    for j in range(18):
        for n in range(pose.num_people):
            score = pose.body_scores[n, j]
            if not score > JOINT_SCORE_THRESHOLD:
                continue
            center = (int(pose.body[n, j, 0] * wc), int(pose.body[n, j, 1] * hc))
            cv2.circle(canvas, center, JOINT_RADIUS, [int(c * score) for c in BODY_COLORS[j]], thickness=-1)


def _draw_hands(canvas: np.ndarray, pose: PoseFrame) -> None:
    cv2 = require_cv2()
    hc, wc = canvas.shape[:2]
    for points, scores in zip(pose.hands, pose.hand_scores):
        pixels = [(int(x * wc), int(y * hc)) for x, y in points]
        for ie, (a, b) in enumerate(HAND_EDGES):
            (x1, y1), (x2, y2) = pixels[a], pixels[b]
            if min(x1, y1, x2, y2) > 0.01:
                intensity = int(scores[a] * scores[b] * 255)
                cv2.line(canvas, (x1, y1), (x2, y2), hand_edge_color(ie, intensity), thickness=HAND_LINE_THICKNESS)
        for (x, y), score in zip(pixels, scores):
            if x > 0.01 and y > 0.01:
                cv2.circle(canvas, (x, y), HAND_POINT_RADIUS, (0, 0, int(score * 255)), thickness=-1)


def _draw_faces(canvas: np.ndarray, pose: PoseFrame) -> None:
    cv2 = require_cv2()
    hc, wc = canvas.shape[:2]
    for points, scores in zip(pose.faces, pose.face_scores):
        for (x, y), score in zip(points, scores):
            x, y = int(x * wc), int(y * hc)
            if x > 0.01 and y > 0.01:
                c = int(score * 255)
                cv2.circle(canvas, (x, y), FACE_POINT_RADIUS, (c, c, c), thickness=-1)


def draw_pose_canvas(pose: PoseFrame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The full-size canvas (short side 2160) before the final resize, RGB uint8."""
    width, height = width or pose.width, height or pose.height
    wc, hc = canvas_size(width, height)
    canvas = np.zeros((hc, wc, 3), dtype=np.uint8)
    _draw_body(canvas, pose)
    _draw_hands(canvas, pose)
    _draw_faces(canvas, pose)
    return canvas


def draw_pose(pose: PoseFrame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Draw one frame's skeletons as an RGB uint8 image of size (height, width).

    The normalised keypoints are mapped onto the output size (default: the frame's own size; after
    alignment that is the reference image's size)."""
    cv2 = require_cv2()
    width, height = width or pose.width, height or pose.height
    canvas = draw_pose_canvas(pose, width, height)
    if canvas.shape[1] == width and canvas.shape[0] == height:
        return canvas
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_LINEAR)


def draw_poses(poses: Sequence[PoseFrame], width: int | None = None, height: int | None = None) -> list[np.ndarray]:
    return [draw_pose(p, width, height) for p in poses]


def resize_pose_image(image, width: int, height: int):
    """A pose image (PIL) at `width` x `height` as the model saw it: PIL's bicubic resize, the default filter with
    which the official training and inference code load pose PNGs of another size."""
    from PIL import Image

    return image if image.size == (width, height) else image.resize((width, height), Image.BICUBIC)


def render_pose(pose: PoseFrame, width: int, height: int) -> np.ndarray:
    """The pose image the model sees at `width` x `height`, pixel for pixel as in the official path: drawn at the
    pose's own size (the source frame's, or the reference's after alignment), then resized with `resize_pose_image`.
    Drawing straight at another size gives thinner, more jagged strokes than the training data."""
    from PIL import Image

    return np.asarray(resize_pose_image(Image.fromarray(draw_pose(pose)), width, height))


def render_pose_small(pose: PoseFrame, width: int, height: int) -> np.ndarray:
    """The pose image for frames far smaller than the canvas (the tiny models' 64 px, trained on it): the canvas
    (`draw_pose_canvas`, short side 2160) reduced to the frame by area averaging, brightened so that a stroke keeps
    about its drawn colour.

    At 64 px a canvas stroke is a quarter of a pixel wide: `render_pose` (point-sampling resizes, as the official
    code does at 512 px and more) keeps about 30 scattered pixels of it, too little skeleton to follow. Averaging
    keeps every stroke as a faint continuous line, and the gain (canvas pixels per frame pixel over the stroke
    width) restores its brightness."""
    cv2 = require_cv2()
    canvas = draw_pose_canvas(pose, width, height)
    gain = max(1.0, canvas.shape[0] / height / (2 * STICK_WIDTH))
    image = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) * gain
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
