"""How well a model animates held-out puppets (issue 14): pixels, pose following and identity.

A `Case` is a puppet never seen in training (identity and motion seeds from their own range, `held_out_case`): the
reference is frame 0 of its 2F-frame video, the driving poses and the ground truth are its last F frames, so that
the puppet has moved away from the reference (in the first frames it has hardly moved, and repeating the
reference would be hard to beat by any model; training draws the reference outside the clip in the same way). Three
kinds of figures, each a mean over frames (and cases):

* pixels: `evaluation.metrics` L1, PSNR (DisCo's, with its uint8 wrap-around), PSNR* (textbook) and SSIM against
  the ground truth;
* pose following (`pose_errors`): every coloured body part (torso, upper arms, forearms, thighs, shins) is found
  in a frame by its identity colour; the median pixel of that colour must lie near the middle of the part in the
  target pose (the midpoint of the limb's two joints, averaged over the two limbs of that colour; the torso's
  four corners). A part whose colour is missing (fewer than `MIN_PART_PIXELS`) counts as missing, not as an error;
* identity (`csim`): the cosine between the puppet recognizer's embedding of the reference face and of each
  frame's face box (the ground-truth box), as the paper's CSIM with ArcFace.

For a style (`puppets.Style`, e.g. a LoRA fine-tuned on `THICK_PASTEL`), `held_out_case(style=...)` draws the
held-out puppet in that style in every frame, and `puppet_saturation` measures how vivid a model paints the puppet
(pastel parts are pale). Limb thickness is not measured: the shipped model's blur hides it (docs/puppets.md).

The baselines are "repeat the reference frame" (`repeat_reference`) and the ground truth itself (its pose error
is the measure's floor: part colours occlude one another).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import puppets as P

HELD_OUT_IDENTITY, HELD_OUT_MOTION = 20_000_000, 30_000_000  # seeds far from the tests' and the hashed streams
COLOUR_TOLERANCE = 40  # max |channel difference| for a pixel to count as a part's colour
MIN_PART_PIXELS = 3
# Parts measured by colour, each with the joints whose mean is its target position.
PART_JOINTS = {
    "torso": ((2, 5, 11, 8),),
    "upper_arm": ((2, 3), (5, 6)),
    "forearm": ((3, 4), (6, 7)),
    "thigh": ((8, 9), (11, 12)),
    "shin": ((9, 10), (12, 13)),
}


@dataclass
class Case:
    video: P.PuppetVideo  # frame 0 is the reference, frames `start`.. the ground truth
    start: int
    face_embedding: np.ndarray | None  # the recognizer's embedding of the reference face (None without one)

    @property
    def reference(self):
        from PIL import Image

        return Image.fromarray(self.video.frames[0])

    @property
    def poses(self):
        from PIL import Image

        return [Image.fromarray(p) for p in self.video.pose_images[self.start:]]

    @property
    def truth(self) -> list:
        return self.video.frames[self.start:]

    @property
    def keypoints(self) -> np.ndarray:
        return self.video.keypoints[self.start:]

    @property
    def face_boxes(self) -> list:
        """Exclusive (x1, y1, x2, y2) boxes of the target frames, as the pipeline takes them."""
        from .preprocessing.face_boxes import inclusive_to_exclusive

        return [inclusive_to_exclusive(b) for b in self.video.face_boxes[self.start:]]

    @property
    def reference_face_box(self):
        from .preprocessing.face_boxes import inclusive_to_exclusive

        return inclusive_to_exclusive(self.video.face_boxes[0])


def held_out_case(index: int, num_frames: int = 8, size: int = 64, recognizer=None, style: P.Style = P.Style()) -> Case:
    """Held-out puppet `index`: a video of 2 * `num_frames` frames drawn in `style`, frame 0 the reference, the last
    `num_frames` the targets."""
    from .puppet_recognizer import face_embedding

    video = P.render_video(HELD_OUT_IDENTITY + index, HELD_OUT_MOTION + index, 2 * num_frames, size, size, style)
    embedding = None if recognizer is None else face_embedding(recognizer, video.frames[0], video.face_boxes[0])
    return Case(video, num_frames, embedding)


def generate(pipe, case: Case, steps: int = 10, seed: int = 0, face_optimization: bool = False) -> list:
    """The pipeline's frames for a case, as (H, W, 3) uint8 arrays; face optimisation on the ground-truth boxes."""
    import torch

    extra = {}
    if face_optimization:
        extra = {"face_optimization": {}, "face_boxes": case.face_boxes, "reference_face_box": case.reference_face_box}
    embedding = case.face_embedding if case.face_embedding is not None else np.zeros(512, np.float32)
    size = case.video.frames[0].shape[0]
    frames = pipe(case.reference, case.poses, face_embeds=embedding, height=size, width=size, num_inference_steps=steps,
                  tile_size=8, tile_overlap=2, generator=torch.Generator().manual_seed(seed),
                  output_type="np", **extra).frames[0]
    return [np.clip(np.round(f * 255), 0, 255).astype(np.uint8) for f in frames]


def repeat_reference(case: Case) -> list:
    return [case.video.frames[0]] * len(case.truth)


def pixel_metrics(frames, truth) -> dict:
    from .evaluation.metrics import l1, psnr, psnr_star, ssim

    metrics = (("l1", l1), ("psnr", psnr), ("psnr_star", psnr_star), ("ssim", ssim))
    return {name: float(np.mean([fn(f, t) for f, t in zip(frames, truth)])) for name, fn in metrics}


def part_position(frame: np.ndarray, colour) -> np.ndarray | None:
    """(x, y) median of the pixels within COLOUR_TOLERANCE of `colour` (pixel centres), None if too few."""
    close = np.abs(frame.astype(np.int32) - np.array(colour, dtype=np.int32)).max(-1) <= COLOUR_TOLERANCE
    ys, xs = np.nonzero(close)
    if len(xs) < MIN_PART_PIXELS:
        return None
    return np.array([np.median(xs), np.median(ys)], dtype=np.float64)


def part_targets(keypoints: np.ndarray, size: int) -> dict:
    """Part name -> (x, y) in pixels: the mean of its joints' midpoints (keypoints normalised, (18, 2))."""
    pixels = keypoints * size  # pixel indices, as the drawing places joint k at round(k * size)
    return {part: np.mean([pixels[list(joints)].mean(0) for joints in groups], axis=0) for part, groups in PART_JOINTS.items()}


def pose_errors(frames, case: Case) -> dict:
    """Mean pixel distance between each part's colour position and its target, over frames and parts found, and
    the fraction of (frame, part) pairs whose colour was missing."""
    colours = case.video.part_colours
    size = case.video.frames[0].shape[0]
    distances, missing = [], 0
    for frame, keypoints in zip(frames, case.keypoints):
        for part, target in part_targets(keypoints, size).items():
            found = part_position(frame, colours[part])
            if found is None:
                missing += 1
            else:
                distances.append(float(np.linalg.norm(found - target)))
    total = len(frames) * len(PART_JOINTS)
    return {"pose_error_px": float(np.mean(distances)) if distances else float("nan"), "parts_missing": missing / total}


def puppet_saturation(frames, case: Case) -> float:
    """Mean HSV saturation, (max - min) / max of the RGB channels, of `frames` over the pixels where the ground truth
    shows a body part (exactly a part's drawn colour): how vivid a model draws the puppet (pastel styles are pale)."""
    colours = np.array(list(case.video.part_colours.values()), dtype=np.int16)
    values = []
    for frame, truth in zip(frames, case.truth):
        on_puppet = (truth[:, :, None, :].astype(np.int16) == colours).all(-1).any(-1)
        pixels = frame[on_puppet].astype(np.float64)
        high = pixels.max(-1)
        values.append(np.where(high > 0, (high - pixels.min(-1)) / np.maximum(high, 1), 0.0))
    return float(np.concatenate(values).mean())


def csim(recognizer, frames, case: Case) -> float:
    """Mean cosine between the recognizer's embedding of the reference face and of each frame's face box."""
    from .evaluation.identity import cosine
    from .puppet_recognizer import face_embedding

    reference = face_embedding(recognizer, case.video.frames[0], case.video.face_boxes[0])
    return float(np.mean([cosine(reference, face_embedding(recognizer, f, b)) for f, b in zip(frames, case.video.face_boxes[case.start:])]))


def evaluate(frames, case: Case, recognizer=None) -> dict:
    """All figures of one case's frames."""
    figures = {**pixel_metrics(frames, case.truth), **pose_errors(frames, case)}
    if recognizer is not None:
        figures["csim"] = csim(recognizer, frames, case)
    return figures


def mean_figures(figures: list) -> dict:
    return {key: float(np.mean([f[key] for f in figures])) for key in figures[0]}
