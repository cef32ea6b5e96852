"""A tiny face recognizer for puppets: tells puppet faces apart, so that CSIM and face optimisation have a
meaningful face model at toy scale (issue 14).

It is an `ArcFaceIResNet` at toy widths, fed exactly as the pipeline's face optimisation feeds its recognizer:
the face box cropped from the frame, stretched to 112x112 (bilinear, `align_corners=False`,
`face_optimization._resize_face`), RGB in [-1, 1]. It is trained with an additive-margin softmax (CosFace):
embeddings and class weights are L2-normalised, the target class's cosine is lowered by `MARGIN` and all cosines
are scaled by `SCALE`, so identities must be separated by an angle, which is what cosine similarity (CSIM) reads.

Training faces come from puppets whose identities are drawn from their own seed stream (`recognizer_seeds`), so
the puppets of a dataset (`puppets.video_seeds`) and the held-out puppets of the tests are unseen identities:
the recognizer must generalise to new puppets, as ArcFace does to new people. Each face is a random frame of a
random motion over a random background, with a 1-pixel box jitter, a random blur and a little noise, so that
the slightly blurred faces a generator draws are still recognised.

`face_embedding(recognizer, frame, box)` is the raw (unnormalised) 512-d embedding, like insightface's
`face.embedding` for real people: `puppets.write_dataset(face_embedder=...)` stores it as `face_embedding.npy`.
"""

from __future__ import annotations

import time

import numpy as np

from . import puppets as P
from .preprocessing.face_boxes import inclusive_to_exclusive

CONFIG = {"layers": (1, 1, 1, 1), "block_out_channels": (8, 16, 32, 32), "num_features": 512}
SCALE, MARGIN = 16.0, 0.2  # CosFace's s and m
FRAMES_PER_MOTION = 4  # faces kept from each rendered trajectory (frames 0, 5, 10, 15 of 16)


def face_crops(frames, boxes):
    """(N, 3, 112, 112) float32 recognizer input: each inclusive `box` cropped from its (H, W, 3) uint8 frame,
    stretched as face optimisation stretches it, RGB in [-1, 1]."""
    import torch

    from .face_optimization import _resize_face

    crops = []
    for frame, box in zip(frames, boxes):
        x1, y1, x2, y2 = inclusive_to_exclusive(box)  # puppets.face_box is inclusive
        pixels = torch.from_numpy(np.ascontiguousarray(frame[y1:y2, x1:x2])).permute(2, 0, 1)[None].float()
        crops.append(_resize_face(pixels / 127.5 - 1.0))
    return torch.cat(crops)


def face_embedding(recognizer, frame: np.ndarray, box) -> np.ndarray:
    """The raw (512,) float32 embedding of the face in `box` (inclusive) of one (H, W, 3) uint8 frame."""
    import torch

    with torch.no_grad():
        return recognizer.eval()(face_crops([frame], [box]))[0].numpy().astype(np.float32)


def reference_face_embedder(recognizer):
    """`video -> embedding` for `puppets.write_dataset(face_embedder=...)`: the recognizer's raw embedding of the
    face in the video's first frame (deterministic: the recognizer runs in eval mode, without randomness)."""
    return lambda video: face_embedding(recognizer, video.frames[0], video.face_boxes[0])


def recognizer_seeds(seed: int, index: int) -> tuple[int, int]:
    """(identity seed, motion seed) of training puppet `index`: streams 5 and 6 of `puppets._rng`, disjoint in
    practice from the dataset's streams 3 and 4."""
    return int(P._rng(seed, 5, index).integers(2**31)), int(P._rng(seed, 6, index).integers(2**31))


def render_faces(identity_seed: int, motion_seed: int, size: int = 64, num_frames: int = 16, keep=None):
    """Frames and inclusive face boxes of one puppet trajectory (without the pose images, which faces do not
    need): `keep` selects the frames (default every 5th)."""
    identity, keypoints, scale, back = P.trajectory(identity_seed, motion_seed, num_frames, size, size)
    keep = range(0, num_frames, 5) if keep is None else keep
    return ([P.render_frame(identity, keypoints[t], back, scale) for t in keep],
            [P.face_box(keypoints[t], size, size, scale) for t in keep])


def _faces(seed: int, identities: int, motions: int, size: int):
    """uint8 frames (N, H, W, 3), inclusive boxes (N, 4) and labels (N,): `motions` trajectories per identity."""
    frames, boxes, labels = [], [], []
    for index in range(identities):
        identity_seed, motion_seed = recognizer_seeds(seed, index)
        for m in range(motions):
            f, b = render_faces(identity_seed, motion_seed + 7919 * m, size)
            frames += f
            boxes += b
            labels += [index] * len(f)
    return np.stack(frames), np.array(boxes), np.array(labels)


def _augmented_crops(frames, boxes, generator):
    """Recognizer input with a +-1 pixel box jitter, a random blur (down- and up-sampling) and a little noise."""
    import torch
    import torch.nn.functional as F

    height, width = frames.shape[1:3]
    jitter = torch.randint(-1, 2, (len(boxes), 4), generator=generator).numpy()
    jittered = np.clip(boxes + jitter, 0, [width - 1, height - 1, width - 1, height - 1])
    jittered[:, 2:] = np.maximum(jittered[:, 2:], jittered[:, :2] + 2)
    crops = face_crops(frames, jittered)
    factor = torch.rand(len(crops), generator=generator)
    blurred = F.interpolate(F.interpolate(crops, size=(28, 28), mode="bilinear", align_corners=False, antialias=True),
                            size=crops.shape[-2:], mode="bilinear", align_corners=False)
    crops = torch.lerp(crops, blurred, factor.view(-1, 1, 1, 1))
    return crops + 0.05 * torch.randn(crops.shape, generator=generator)


def train_recognizer(seed: int = 0, identities: int = 300, motions: int = 3, steps: int = 800, batch_size: int = 64,
                     learning_rate: float = 3e-3, size: int = 64, log=None):
    """Train a puppet recognizer (CosFace over `identities` puppets, each seen in `motions` trajectories).
    Returns (recognizer in eval mode, figures for the report)."""
    import torch
    import torch.nn.functional as F

    from .models import ArcFaceIResNet

    log = log or (lambda message: print(message, flush=True))
    started = time.time()
    frames, boxes, labels = _faces(seed, identities, motions, size)
    render_seconds = time.time() - started
    torch.manual_seed(seed)
    recognizer = ArcFaceIResNet(**CONFIG)
    classes = torch.nn.Parameter(torch.randn(identities, CONFIG["num_features"]) * 0.01)
    params = [p for p in recognizer.parameters() if p.requires_grad] + [classes]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    recognizer.train()
    losses, correct = [], []
    for step in range(steps):
        batch = torch.randint(len(labels), (batch_size,), generator=generator).numpy()
        target = torch.from_numpy(labels[batch])
        embeddings = F.normalize(recognizer(_augmented_crops(frames[batch], boxes[batch], generator)), dim=1)
        cosines = embeddings @ F.normalize(classes, dim=1).T
        loss = F.cross_entropy(SCALE * (cosines - MARGIN * F.one_hot(target, identities)), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        correct.append(float((cosines.argmax(1) == target).float().mean()))
        if (step + 1) % 100 == 0:
            log(f"recognizer step {step + 1}/{steps}: loss {np.mean(losses[-100:]):.3f}, train accuracy {np.mean(correct[-100:]):.3f}")
    recognizer.eval()
    return recognizer, {"recognizer_identities": identities, "recognizer_faces": int(len(labels)), "recognizer_steps": steps,
                        "recognizer_loss_last": float(np.mean(losses[-50:])), "recognizer_train_accuracy": float(np.mean(correct[-50:])),
                        "recognizer_render_seconds": round(render_seconds, 1), "recognizer_seconds": round(time.time() - started, 1)}


def evaluate_recognizer(recognizer, identity_seeds, size: int = 64) -> dict:
    """Open-set figures on puppets given by `identity_seeds` (unseen in training): each puppet's gallery face is
    frame 0 of one trajectory, its probes are frames 0, 5, 10, 15 of another trajectory over another background.
    Returns the identification accuracy (nearest gallery face by cosine) and the mean cosine of same-puppet and
    different-puppet pairs."""
    import torch
    import torch.nn.functional as F

    gallery, probes = [], []
    for identity_seed in identity_seeds:
        f, b = render_faces(identity_seed, identity_seed + 1, size, keep=[0])
        gallery.append(face_crops(f, b))
        f, b = render_faces(identity_seed, identity_seed + 2, size)
        probes.append(face_crops(f, b))
    with torch.no_grad():
        g = F.normalize(recognizer.eval()(torch.cat(gallery)), dim=1)
        p = F.normalize(recognizer(torch.cat(probes)), dim=1)
    n, k = len(identity_seeds), probes[0].shape[0]
    truth = torch.arange(n).repeat_interleave(k)
    cosines = p @ g.T  # (n * k, n)
    same = cosines[torch.arange(n * k), truth]
    different = cosines[truth[:, None] != torch.arange(n)[None]]
    return {"identification_accuracy": float((cosines.argmax(1) == truth).float().mean()), "puppets": n,
            "cosine_same": float(same.mean()), "cosine_different": float(different.mean()),
            "cosine_gap": float(same.mean() - different.mean())}


def held_out_identity_seeds(count: int) -> list[int]:
    """Identity seeds for evaluation: large numbers, far from the tests' small seeds and the hashed streams."""
    return [10_000_000 + 17 * i for i in range(count)]

