"""Synthetic "puppets": short videos of articulated figures with an identity, for training and testing at toy scale.

A puppet is an `Identity` (the colours of its body parts and a face pattern) moving a skeleton in the
OpenPose-18 body layout of `PoseFrame` along smooth random trajectories (`Motion`). `render_video` draws it over a
smooth random background and returns, per frame, the RGB image, the ground-truth `PoseFrame`, the pose image
drawn by the package's own skeleton drawing (`preprocessing.drawing.render_pose_small`), the face box and the face mask. Everything is deterministic from seeds
and uses numpy and OpenCV only (no torch).

The skeleton is a kinematic tree: a pelvis drifting around a base point; the torso leaning around vertical;
the head turning around the torso's direction; upper arms and thighs at angles relative to the torso, forearms
and shins relative to them. Every angle (and the pelvis offset) is its base value plus `HARMONICS` sinusoids whose
amplitudes add up to at most the angle's amplitude budget and whose frequencies are at most `MAX_FREQUENCY`
cycles per frame, so an angle moves at most `budget * 2 * pi * MAX_FREQUENCY` radians per frame. One affine
(scale <= 1 and shift) per video then fits the whole trajectory inside the frame with a margin.

A `Style` changes how every frame of a video is drawn (`THICK_PASTEL`: arms and legs twice as thick, body parts
pale), for fine-tuning on a look the shipped model never saw; the default `Style()` is the look it was trained on.

Body parts are drawn without anti-aliasing in this order: background, thighs and shins, torso, neck, upper arms
and forearms, head (a disc with a pattern, eyes and a mouth). Every pixel of a part has exactly the identity's
colour for that part, unless a later part covers it.

`write_dataset` writes puppet videos in the training layout of `prepare-dataset` (`<name>/images`, `poses`,
`faces`, `face_embedding.npy` and `videos.txt`). The training recipe stores the embedding of a recognizer trained
on puppet faces (`puppet_recognizer`), given as `face_embedder`; without one the face embedding is a fixed random
projection of the identity's parameters (`identity_embedding`), the same for all videos of one puppet.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import StableAnimatorError
from .preprocessing.drawing import render_pose_small
from .preprocessing.keypoints import PoseFrame

# --- the skeleton, in units of the frame's short side ---------------------------------------------------------
TORSO = 0.24  # pelvis -> neck
HEAD = 0.10  # neck -> nose (the head's centre)
SHOULDER = 0.075  # neck -> each shoulder, across the torso
HIP = 0.05  # pelvis -> each hip, across the torso
UPPER_ARM, FOREARM = 0.13, 0.12
THIGH, SHIN = 0.15, 0.15
HEAD_RADIUS = 0.085
LIMB_HALF_WIDTH = 0.035  # limbs are drawn this thick on each side of their axis
PELVIS = (0.5, 0.56)  # base position (x, y), normalised

# --- motion -----------------------------------------------------------------------------------------------------
HARMONICS = 2  # sinusoids per angle
MIN_FREQUENCY, MAX_FREQUENCY = 0.015, 0.05  # cycles per frame
# Frame short sides, per axis (x, y): the puppet walks to and fro across the frame, so that a frame half a clip
# away differs from the reference by more than a few limbs, and following the pose matters more than copying.
PELVIS_AMPLITUDE = (0.15, 0.03)
# Angle names, their base values (radians; 0 = straight down along the torso for limbs) and amplitude budgets.
# Torso lean and head turn are measured from vertical; limb angles from the torso's downward direction,
# positive = towards the person's own side (away from the body); the second joint bends relative to the first.
ANGLES = {
    "torso": (0.0, 0.20),
    "head": (0.0, 0.30),
    "r_upper_arm": (0.35, 0.9), "r_forearm": (0.3, 0.8),
    "l_upper_arm": (0.35, 0.9), "l_forearm": (0.3, 0.8),
    "r_thigh": (0.12, 0.30), "r_shin": (0.0, 0.30),
    "l_thigh": (0.12, 0.30), "l_shin": (0.0, 0.30),
}
FIT_MARGIN = 0.06  # keypoints stay inside [margin, 1 - margin] of the frame (head disc included)

# --- identity ---------------------------------------------------------------------------------------------------
PARTS = ("torso", "upper_arm", "forearm", "thigh", "shin", "skin")
PATTERNS = ("plain", "horizontal_stripes", "vertical_stripes", "dots", "diagonal_stripes")
# Each drawn limb: (name, OpenPose joint a, joint b, colour part). Order = drawing order within the limbs.
LEG_LIMBS = (("r_thigh", 8, 9, "thigh"), ("r_shin", 9, 10, "shin"), ("l_thigh", 11, 12, "thigh"), ("l_shin", 12, 13, "shin"))
ARM_LIMBS = (("r_upper_arm", 2, 3, "upper_arm"), ("r_forearm", 3, 4, "forearm"), ("l_upper_arm", 5, 6, "upper_arm"), ("l_forearm", 6, 7, "forearm"))
EMBEDDING_DIM = 512


@dataclass(frozen=True)
class Style:
    """How a puppet is drawn, the same in every frame of a video. `Style()` is the look tiny-puppet was trained on."""

    limb_scale: float = 1.0  # arms and legs are drawn this many times LIMB_HALF_WIDTH thick (the neck is not)
    lighten: float = 0.0  # body-part colours (PARTS) are mixed this far towards white: pastel puppets

    def part_colour(self, colour) -> tuple[int, int, int]:
        """The colour a body part of identity colour `colour` is drawn in."""
        if not self.lighten:
            return tuple(colour)
        return tuple(int(c + self.lighten * (255 - c) + 0.5) for c in colour)  # halves round up


# The style LoRA's look (examples/puppets/train_style_lora.py): limbs 9 px wide at 64 px instead of 5, and part colours
# halfway to white. The shipped model paints pale references vivid (it never saw saturation below 0.55), a mistake
# that survives its blur; thickness alone left its blurry output unchanged in pilots.
THICK_PASTEL = Style(limb_scale=2.0, lighten=0.5)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _vivid(rng: np.random.Generator, saturation=(0.55, 1.0), value=(0.55, 1.0)) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


@dataclass(frozen=True)
class Identity:
    """What makes a puppet recognisable: part colours (RGB) and a face pattern."""

    colors: dict  # part name (PARTS) -> (r, g, b)
    eye_color: tuple
    mouth_color: tuple
    pattern: str  # one of PATTERNS
    pattern_color: tuple
    pattern_period: int  # pixels between stripes or dots at 64 px (scaled with the frame)

    @classmethod
    def from_seed(cls, seed: int) -> "Identity":
        rng = _rng(seed, 0)
        colors = {part: _vivid(rng) for part in PARTS}
        return cls(
            colors=colors,
            eye_color=_vivid(rng, value=(0.0, 0.35)),
            mouth_color=_vivid(rng, saturation=(0.7, 1.0)),
            pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
            pattern_color=_vivid(rng),
            pattern_period=int(rng.integers(3, 5)),
        )

    def features(self) -> np.ndarray:
        """The identity as a vector of numbers in [0, 1] (colours, pattern one-hot, period)."""
        colours = [c / 255.0 for part in PARTS for c in self.colors[part]]
        colours += [c / 255.0 for c in (*self.eye_color, *self.mouth_color, *self.pattern_color)]
        one_hot = [float(self.pattern == p) for p in PATTERNS]
        return np.array(colours + one_hot + [(self.pattern_period - 3) / 2.0])


def identity_embedding(identity: Identity) -> np.ndarray:
    """A (512,) float32 unit vector standing in for the face embedding until phase 2 trains a puppet recognizer:
    the centred identity features times a fixed random Gaussian matrix (seed 0), normalised."""
    features = identity.features() - 0.5
    matrix = np.random.default_rng(0).standard_normal((features.size, EMBEDDING_DIM))
    vector = features @ matrix
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@dataclass(frozen=True)
class Motion:
    """Sinusoids for every angle in `ANGLES` and for the pelvis offset: (amplitudes, frequencies, phases) each
    of shape (HARMONICS,)."""

    angles: dict
    pelvis: tuple  # ((amps, freqs, phases) for x, same for y)

    @classmethod
    def from_seed(cls, seed: int) -> "Motion":
        rng = _rng(seed, 1)

        def sinusoids(budget):
            weights = rng.dirichlet(np.ones(HARMONICS)) * rng.uniform(0.5, 1.0)
            return (weights * budget, rng.uniform(MIN_FREQUENCY, MAX_FREQUENCY, HARMONICS), rng.uniform(0, 2 * math.pi, HARMONICS))

        angles = {name: sinusoids(budget) for name, (_, budget) in ANGLES.items()}
        return cls(angles=angles, pelvis=tuple(sinusoids(amplitude) for amplitude in PELVIS_AMPLITUDE))

    @staticmethod
    def _value(sinusoids, t: np.ndarray) -> np.ndarray:
        amps, freqs, phases = sinusoids
        return (amps[:, None] * np.sin(2 * math.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)

    def angle(self, name: str, t: np.ndarray) -> np.ndarray:
        return ANGLES[name][0] + self._value(self.angles[name], t)

    def pelvis_offset(self, t: np.ndarray) -> np.ndarray:
        return np.stack([self._value(self.pelvis[0], t), self._value(self.pelvis[1], t)], -1)


def _direction(angle: np.ndarray) -> np.ndarray:
    """Unit vectors (.., 2) in image coordinates for angles measured from straight down (+y), counter-clockwise
    as seen on screen for positive angles (towards +x)."""
    return np.stack([np.sin(angle), np.cos(angle)], -1)


def skeleton(motion: Motion, num_frames: int, start: int = 0) -> np.ndarray:
    """(num_frames, 18, 2) OpenPose-18 body keypoints in units of the frame's short side, before fitting.

    The puppet faces the camera: its right side (OpenPose "R") is on the image's left (smaller x)."""
    t = np.arange(start, start + num_frames, dtype=np.float64)
    a = {name: motion.angle(name, t) for name in ANGLES}
    pelvis = np.array(PELVIS) + motion.pelvis_offset(t)
    down = _direction(a["torso"])  # torso axis, pointing from neck to pelvis
    across = np.stack([down[:, 1], -down[:, 0]], -1)  # rotated -90 deg: towards +x (the puppet's left) when upright
    neck = pelvis - TORSO * down
    k = np.zeros((num_frames, 18, 2))
    k[:, 1] = neck
    k[:, 0] = neck - HEAD * _direction(a["torso"] + a["head"])  # nose: up from the neck
    k[:, 2], k[:, 5] = neck - SHOULDER * across, neck + SHOULDER * across
    k[:, 8], k[:, 11] = pelvis - HIP * across, pelvis + HIP * across
    for side, sign, (shoulder, elbow, wrist), (hip, knee, ankle) in (("r", -1, (2, 3, 4), (8, 9, 10)), ("l", 1, (5, 6, 7), (11, 12, 13))):
        upper = a["torso"] + sign * a[f"{side}_upper_arm"]
        lower = upper + sign * a[f"{side}_forearm"]
        k[:, elbow] = k[:, shoulder] + UPPER_ARM * _direction(upper)
        k[:, wrist] = k[:, elbow] + FOREARM * _direction(lower)
        thigh = a["torso"] + sign * a[f"{side}_thigh"]
        shin = thigh - sign * a[f"{side}_shin"]  # knees bend the other way
        k[:, knee] = k[:, hip] + THIGH * _direction(thigh)
        k[:, ankle] = k[:, knee] + SHIN * _direction(shin)
    head_up = -_direction(a["torso"] + a["head"])  # from the neck towards the nose
    head_across = np.stack([-head_up[:, 1], head_up[:, 0]], -1)  # towards the puppet's left
    nose = k[:, 0]
    k[:, 14] = nose + HEAD_RADIUS * (0.35 * head_up - 0.35 * head_across)  # R eye
    k[:, 15] = nose + HEAD_RADIUS * (0.35 * head_up + 0.35 * head_across)  # L eye
    k[:, 16] = nose + HEAD_RADIUS * (0.1 * head_up - 0.9 * head_across)  # R ear
    k[:, 17] = nose + HEAD_RADIUS * (0.1 * head_up + 0.9 * head_across)  # L ear
    return k


def fit_to_frame(points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
    """Map short-side units to normalised coordinates, with one scale (<= 1) and shift for the whole video so that
    every point and the head disc lie inside [FIT_MARGIN, 1 - FIT_MARGIN]. Returns (normalised points, scale)."""
    short = min(width, height)
    size = np.array([width, height], dtype=np.float64) / short  # the frame in short-side units
    low = np.minimum(points.reshape(-1, 2).min(0), points[:, 0].min(0) - HEAD_RADIUS)
    high = np.maximum(points.reshape(-1, 2).max(0), points[:, 0].max(0) + HEAD_RADIUS)
    room = size * (1 - 2 * FIT_MARGIN)
    scale = float(min(1.0, *(room / np.maximum(high - low, 1e-9))))
    centre = (low + high) / 2
    shifted = (points - centre) * scale + np.clip(centre, size * FIT_MARGIN + (centre - low) * scale, size * (1 - FIT_MARGIN) - (high - centre) * scale)
    return shifted / size, scale


def background(seed: int, width: int, height: int) -> np.ndarray:
    """A smooth RGB uint8 background: a linear gradient between two muted colours plus three soft blobs."""
    rng = _rng(seed, 2)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = x / max(width - 1, 1), y / max(height - 1, 1)
    c0, c1 = (np.array(_vivid(rng, (0.1, 0.6), (0.25, 0.9)), dtype=np.float64) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)) / math.sqrt(0.5) + 0.5
    image = c0 + np.clip(ramp, 0, 1)[..., None] * (c1 - c0)
    for _ in range(3):
        cx, cy, sigma, strength = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3), rng.uniform(0.2, 0.5)
        colour = np.array(_vivid(rng, (0.1, 0.6), (0.25, 0.9)), dtype=np.float64)
        weight = strength * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
        image = image * (1 - weight[..., None]) + colour * weight[..., None]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def pose_frame(keypoints: np.ndarray, width: int, height: int) -> PoseFrame:
    """One person's normalised (18, 2) body keypoints as a PoseFrame: all body joints visible (score 1); no face
    landmarks or hands (zero points, zero scores, so the drawing skips them)."""
    z = np.zeros
    return PoseFrame(keypoints[None], np.ones((1, 18)), z((1, 68, 2)), z((1, 68)), z((2, 21, 2)), z((2, 21)), width, height)


def _pixel(point: np.ndarray, width: int, height: int) -> tuple[int, int]:
    return (int(round(point[0] * width)), int(round(point[1] * height)))


def limb_half_width_px(width: int, height: int, scale: float, limb_scale: float = 1.0) -> int:
    return max(1, int(round(LIMB_HALF_WIDTH * limb_scale * scale * min(width, height))))


def head_radius_px(width: int, height: int, scale: float) -> int:
    return max(2, int(round(HEAD_RADIUS * scale * min(width, height))))


def _face_pattern(identity: Identity, radius: int, scale: float) -> np.ndarray:
    """(2r+1, 2r+1) bool: where the pattern colour goes on the face disc (centred on the nose)."""
    size = 2 * radius + 1
    y, x = np.mgrid[0:size, 0:size] - radius
    period = max(2, int(round(identity.pattern_period * radius / (HEAD_RADIUS * 64))))  # scaled from 64 px frames
    if identity.pattern == "horizontal_stripes":
        return (y % period) == 0
    if identity.pattern == "vertical_stripes":
        return (x % period) == 0
    if identity.pattern == "diagonal_stripes":
        return ((x + y) % period) == 0
    if identity.pattern == "dots":
        return ((x % period) == 0) & ((y % period) == 0)
    return np.zeros((size, size), dtype=bool)


def render_frame(identity: Identity, keypoints: np.ndarray, back: np.ndarray, scale: float, style: Style = Style()) -> np.ndarray:
    """The puppet with normalised (18, 2) keypoints drawn over `back` (H, W, 3 uint8) in `style`; returns a new image."""
    import cv2

    height, width = back.shape[:2]
    image = np.ascontiguousarray(back.copy())
    thickness = 2 * limb_half_width_px(width, height, scale) + 1  # the neck's
    limb_thickness = 2 * limb_half_width_px(width, height, scale, style.limb_scale) + 1
    p = [_pixel(point, width, height) for point in keypoints]
    colors = {part: style.part_colour(colour) for part, colour in identity.colors.items()}
    for _, a, b, part in LEG_LIMBS:
        cv2.line(image, p[a], p[b], colors[part], limb_thickness, cv2.LINE_8)
    cv2.fillConvexPoly(image, np.array([p[2], p[5], p[11], p[8]], dtype=np.int32), colors["torso"], cv2.LINE_8)
    cv2.line(image, p[1], p[0], colors["skin"], thickness, cv2.LINE_8)  # neck
    for _, a, b, part in ARM_LIMBS:
        cv2.line(image, p[a], p[b], colors[part], limb_thickness, cv2.LINE_8)
    # The head: a skin disc with the pattern, eyes on the eye keypoints and a mouth below the nose.
    radius = head_radius_px(width, height, scale)
    cx, cy = p[0]
    disc = np.zeros((height, width), dtype=np.uint8)
    cv2.circle(disc, (cx, cy), radius, 1, -1, cv2.LINE_8)
    disc = disc.astype(bool)
    image[disc] = colors["skin"]
    pattern = np.zeros((height, width), dtype=bool)
    full = _face_pattern(identity, radius, scale)
    ys, xs = np.nonzero(full)
    ys, xs = ys + cy - radius, xs + cx - radius
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    pattern[ys[inside], xs[inside]] = True
    image[pattern & disc] = identity.pattern_color
    eye_radius = max(1, radius // 4)
    for eye in (14, 15):
        cv2.circle(image, p[eye], eye_radius, identity.eye_color, -1, cv2.LINE_8)
    nose, eyes = keypoints[0], (keypoints[14] + keypoints[15]) / 2
    mouth_centre = nose - 0.9 * (eyes - nose)  # below the nose, as far as the eyes are above it
    across = keypoints[15] - keypoints[14]
    m1, m2 = _pixel(mouth_centre - 0.4 * across, width, height), _pixel(mouth_centre + 0.4 * across, width, height)
    cv2.line(image, m1, m2, identity.mouth_color, max(1, radius // 4), cv2.LINE_8)
    return image


def face_box(keypoints: np.ndarray, width: int, height: int, scale: float) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2), inclusive pixels, clipped to the frame: the square around the head disc."""
    radius = head_radius_px(width, height, scale)
    cx, cy = _pixel(keypoints[0], width, height)
    return (max(cx - radius, 0), max(cy - radius, 0), min(cx + radius, width - 1), min(cy + radius, height - 1))


def face_mask(box: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """(H, W) uint8: 255 inside the inclusive box, 0 elsewhere (the masks `prepare-dataset` writes)."""
    x1, y1, x2, y2 = box
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y1 : y2 + 1, x1 : x2 + 1] = 255
    return mask


@dataclass
class PuppetVideo:
    identity: Identity
    frames: list  # (H, W, 3) uint8 RGB
    poses: list  # PoseFrame per frame (normalised, size W x H)
    pose_images: list  # (H, W, 3) uint8: `render_pose_small` of each PoseFrame
    face_boxes: list  # (x1, y1, x2, y2) inclusive pixels per frame
    face_masks: list  # (H, W) uint8 per frame
    scale: float  # the fit's scale (1 = the skeleton's nominal size)
    keypoints: np.ndarray = field(repr=False, default=None)  # (F, 18, 2) normalised
    style: Style = Style()  # how every frame was drawn

    @property
    def part_colours(self) -> dict:
        """Part name -> the colour its pixels have in the frames (the identity's, changed by the style)."""
        return {part: self.style.part_colour(colour) for part, colour in self.identity.colors.items()}


def trajectory(identity_seed: int, motion_seed: int, num_frames: int, width: int, height: int):
    """What every frame of a puppet video is drawn from: the `Identity`, the keypoints fitted to the frame
    `(F, 18, 2)`, the fit's scale and the background."""
    keypoints, scale = fit_to_frame(skeleton(Motion.from_seed(motion_seed), num_frames), width, height)
    return Identity.from_seed(identity_seed), keypoints, scale, background(motion_seed, width, height)


def render_video(identity_seed: int, motion_seed: int, num_frames: int = 16, width: int = 64, height: int = 64,
                 style: Style = Style()) -> PuppetVideo:
    """The puppet of `identity_seed` moving along the trajectories of `motion_seed` over that seed's background,
    every frame drawn in `style`."""
    if num_frames < 1 or width < 16 or height < 16:
        raise StableAnimatorError(f"A puppet video needs at least 1 frame and 16x16 pixels, got {num_frames} frames of {width}x{height}.")
    identity, keypoints, scale, back = trajectory(identity_seed, motion_seed, num_frames, width, height)
    poses = [pose_frame(k, width, height) for k in keypoints]
    boxes = [face_box(k, width, height, scale) for k in keypoints]
    return PuppetVideo(
        identity=identity,
        frames=[render_frame(identity, k, back, scale, style) for k in keypoints],
        poses=poses,
        pose_images=[render_pose_small(pose, width, height) for pose in poses],
        face_boxes=boxes,
        face_masks=[face_mask(box, width, height) for box in boxes],
        scale=scale,
        keypoints=keypoints,
        style=style,
    )


def video_seeds(seed: int, index: int, videos_per_puppet: int = 1) -> tuple[int, int]:
    """(identity seed, motion seed) of video `index` of a dataset: videos come in runs of `videos_per_puppet`
    clips of the same puppet, each with its own motion and background."""
    puppet = index // videos_per_puppet
    identity_seed = int(_rng(seed, 3, puppet).integers(2**31))
    motion_seed = int(_rng(seed, 4, index).integers(2**31))
    return identity_seed, motion_seed


def video_name(index: int) -> str:
    return f"puppet_{index:05d}"


def write_video(video: PuppetVideo, folder: Path, face_embedder=None) -> None:
    """Write one video's `images/`, `poses/`, `faces/` and `face_embedding.npy` into an (empty) `folder`.

    `face_embedder(video)` gives the (512,) face embedding (default: `identity_embedding` of the identity)."""
    from PIL import Image

    from .training.prepare_dataset import FRAME_FOLDERS

    for sub, pictures in zip(FRAME_FOLDERS, (video.frames, video.pose_images, video.face_masks)):
        (folder / sub).mkdir(parents=True)
        for i, picture in enumerate(pictures):
            Image.fromarray(picture).save(folder / sub / f"frame_{i}.png")
    embedding = identity_embedding(video.identity) if face_embedder is None else face_embedder(video)
    np.save(folder / "face_embedding.npy", np.asarray(embedding, dtype=np.float32))


def _dataset_file(path: Path) -> bool:
    """A file, relative to the dataset folder, that `write_dataset` writes: `--overwrite` replaces only these."""
    from .training.prepare_dataset import own_video_file

    parts = path.parts
    return parts == ("videos.txt",) or (len(parts) > 1 and parts[0].startswith("puppet_") and own_video_file(Path(*parts[1:])))


def _dataset_folder(path: Path) -> bool:
    from .training.prepare_dataset import own_video_folder

    parts = path.parts
    return parts[0].startswith("puppet_") and (len(parts) == 1 or own_video_folder(Path(*parts[1:])))


def write_dataset(out: str | os.PathLike, num_videos: int, seed: int = 0, num_frames: int = 16, width: int = 64,
                  height: int = 64, videos_per_puppet: int = 1, overwrite: bool = False, face_embedder=None,
                  style: Style = Style()) -> list[Path]:
    """Write `num_videos` puppet videos into `out` in the training layout, with `videos.txt` listing them, every
    frame drawn in `style`.

    `face_embedder(video) -> (512,)` computes each video's `face_embedding.npy`; the recipe passes the puppet
    recognizer's embedding of the face in the video's first frame (`puppet_recognizer.reference_face_embedder`).
    Without it, `identity_embedding` stands in.
    The whole dataset is staged and moved into place at the end (`StagedOutputs`); an existing `out` is replaced
    only with `overwrite` and only if it holds nothing but an earlier puppet dataset."""
    from .outputs import StagedOutputs, check_replaceable_folder, check_writable

    out = Path(out)
    if num_videos < 1 or videos_per_puppet < 1:
        raise StableAnimatorError(f"--videos and --videos-per-puppet must be at least 1, got {num_videos} and {videos_per_puppet}.")
    check_writable(out, "--out", folder=True)
    check_replaceable_folder(out, "--out", overwrite, _dataset_file, _dataset_folder)
    names = []
    with StagedOutputs() as staged:
        staging = staged.folder(out)
        for index in range(num_videos):
            identity_seed, motion_seed = video_seeds(seed, index, videos_per_puppet)
            video = render_video(identity_seed, motion_seed, num_frames, width, height, style)
            write_video(video, staging / video_name(index), face_embedder)
            names.append(video_name(index))
        (staging / "videos.txt").write_text("".join(f"{name}\n" for name in names))
    return [out / name for name in names]
