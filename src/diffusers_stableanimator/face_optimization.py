"""StableAnimator's inference-time face optimisation ("HJB"): the objective the scheduler minimises over x̂0.

The objective decodes the predicted clean latent x̂0, crops each output frame's face box, runs the frozen ArcFace
recognizer and returns mean_k |1 - cos(e_k, e_ref)| over the frames that have a face; `FaceObjective.refine` runs
the Adam iterations on x̂0. Every setting is a field of `FaceOptimizationConfig`. The scheduler only swaps the
refined x̂0 into its Euler update (`HJBEulerScheduler.step(..., refine_x0=...)`).

Two decode modes:
    * `"full"`: decode whole frames (the reference's semantics, for parity with published results);
    * `"face_crop"` (default): decode only a latent window around each face, `margin` latent pixels wider than
      the face box on each side. See docs/face_optimization.md for the measured agreement with `"full"`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Literal, NamedTuple, Sequence

import PIL.Image
import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils import logging
from torch import nn

from .models.arcface import ARCFACE_INPUT_SIZE
from .preprocessing.face_boxes import Box

logger = logging.get_logger(__name__)


NO_RECOGNIZER_MESSAGE = (
    "Face optimisation needs the pipeline's `face_recognizer` component (a differentiable ArcFace), but it is None. "
    "Add one when loading, e.g. `StableAnimatorPipeline.from_pretrained(repo, face_recognizer="
    "ArcFaceIResNet.from_pretrained(path_to_recognizer))`, convert the official `glintr100_torch.pth` with this "
    "package's checkpoint conversion, or turn face optimisation off (`face_optimization=None`)."
)


@dataclass
class FaceOptimizationConfig:
    r"""
    Every face-optimisation setting, in one place. The defaults of the step window, learning rate and iterations
    are the reference implementation's.

    Args:
        mode (`"face_crop"` or `"full"`): `"face_crop"` decodes only a latent window around each face (much
            cheaper); `"full"` decodes whole frames, exactly as the reference implementation.
        margin (`int`, defaults to 2): Latent pixels (x8 output pixels) decoded around each face box in
            `"face_crop"` mode, so the decoder's convolutions see the face's surroundings.
        start_step, end_step (`int`, defaults to 0 and 20): The denoising steps refined, 0-based, both inclusive.
        learning_rate (`float`, defaults to 0.1): Adam's learning rate at step 0; at step `i` of `n` it is
            `learning_rate * (1 - i / n)`.
        iterations (`int`, defaults to 3): Adam steps on x̂0 in each refined denoising step.
        chunk_size (`int` or `None`, defaults to 4): Face frames decoded together (the temporal decoder mixes the
            frames of a chunk). Memory grows with the chunk, not with the video; `None` decodes all face frames
            at once, as the reference does (it runs out of memory on long videos).
        gradient_checkpointing (`bool` or `None`): Recompute the VAE decoder's activations in the backward pass
            instead of keeping them: less memory, one more decoder forward per iteration. `None` (default): on in
            `"full"` mode, off in `"face_crop"` mode, whose windows are small.
    """

    mode: Literal["face_crop", "full"] = "face_crop"
    margin: int = 2
    start_step: int = 0
    end_step: int = 20
    learning_rate: float = 0.1
    iterations: int = 3
    chunk_size: int | None = 4
    gradient_checkpointing: bool | None = None

    def __post_init__(self):
        def whole(value, least):
            return isinstance(value, int) and not isinstance(value, bool) and value >= least

        if self.mode not in ("face_crop", "full"):
            raise ValueError(f"Face optimisation `mode` must be 'face_crop' or 'full', got {self.mode!r}.")
        for name, least in (("margin", 0), ("start_step", 0), ("end_step", 0), ("iterations", 1)):
            if not whole(getattr(self, name), least):
                raise ValueError(f"Face optimisation `{name}` must be a whole number of at least {least}, got {getattr(self, name)!r}.")
        if self.end_step < self.start_step:
            raise ValueError(f"Face optimisation `end_step` ({self.end_step}) must not be before `start_step` ({self.start_step}).")
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) or not 0 < self.learning_rate < math.inf:
            raise ValueError(f"Face optimisation `learning_rate` must be a positive finite number, got {self.learning_rate!r}.")
        if self.chunk_size is not None and not whole(self.chunk_size, 1):
            raise ValueError(f"Face optimisation `chunk_size` must be a whole number of at least 1, or None for all face frames at once, got {self.chunk_size!r}.")
        if self.gradient_checkpointing not in (None, True, False):
            raise ValueError(f"Face optimisation `gradient_checkpointing` must be True, False or None (automatic), got {self.gradient_checkpointing!r}.")

    @classmethod
    def from_value(cls, value: FaceOptimizationConfig | dict | None) -> FaceOptimizationConfig | None:
        """`None` (off), a config, or a dict of its fields (`{}` = the defaults)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - set(asdict(cls()))
            if unknown:
                raise ValueError(f"Unknown face optimisation option(s) {sorted(unknown)}; expected some of {sorted(asdict(cls()))}.")
            return cls(**value)
        raise TypeError(f"`face_optimization` must be None, a FaceOptimizationConfig or a dict, got {type(value).__name__}.")

    def refines(self, step_index: int) -> bool:
        """Whether denoising step `step_index` (0-based) is refined."""
        return self.start_step <= step_index <= self.end_step

    def learning_rate_at(self, step_index: int, num_inference_steps: int) -> float:
        return self.learning_rate * (1.0 - step_index / num_inference_steps)

    @property
    def checkpoints_decoder(self) -> bool:
        return self.mode == "full" if self.gradient_checkpointing is None else self.gradient_checkpointing


class FaceOptimizationInputs(NamedTuple):
    """Checked face-optimisation arguments of one pipeline call."""

    config: FaceOptimizationConfig
    face_boxes: list[Box | None]  # one per output frame, clipped to the output size
    reference_face_box: Box  # clipped to the reference image


# ---------------------------------------------------------------------------------------------------- boxes
def clip_box(box: Sequence[int], width: int, height: int, what: str) -> Box:
    """Validate one `(x1, y1, x2, y2)` box and clip it to a `width` x `height` image."""
    if len(box) != 4:
        raise ValueError(f"{what}: a face box is (x1, y1, x2, y2), got {tuple(box)}.")
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(
            f"{what}: the face box {(x1, y1, x2, y2)} is empty or inverted; expected x1 < x2 and y1 < y2 "
            "((x1, y1, x2, y2) with x2/y2 exclusive), or None for a frame without a face."
        )
    clipped = (max(x1, 0), max(y1, 0), min(x2, width), min(y2, height))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ValueError(
            f"{what}: the face box {(x1, y1, x2, y2)} lies outside the {width}x{height} image; give a box inside "
            "it, or None for a frame without a face."
        )
    return clipped


def check_face_optimization_inputs(
    face_optimization: FaceOptimizationConfig | dict | None,
    face_boxes: Sequence[Sequence[int] | None] | None,
    reference_face_box: Sequence[int] | None,
    *,
    num_frames: int,
    height: int,
    width: int,
    reference_size: tuple[int, int],
    face_recognizer: nn.Module | None,
) -> FaceOptimizationInputs | None:
    """
    Validate the pipeline's face-optimisation arguments before any heavy work. Returns them checked and clipped,
    or None when face optimisation is off or no frame has a face (with a warning).
    """
    config = FaceOptimizationConfig.from_value(face_optimization)
    if config is None:
        if face_boxes is not None or reference_face_box is not None:
            logger.warning("`face_boxes` / `reference_face_box` are ignored: face optimisation is off (pass `face_optimization={}` to turn it on).")
        return None
    if face_recognizer is None:
        raise ValueError(NO_RECOGNIZER_MESSAGE)
    if face_boxes is None or reference_face_box is None:
        raise ValueError(
            "Face optimisation needs `face_boxes` (one (x1, y1, x2, y2) box or None per output frame, in output "
            "pixels) and `reference_face_box` (the face in the reference image, in its own pixels)."
        )
    if len(face_boxes) != num_frames:
        raise ValueError(
            f"`face_boxes` has {len(face_boxes)} entries but the video has {num_frames} frames; give one box "
            "(or None) per pose frame."
        )
    boxes = [None if box is None else clip_box(box, width, height, f"face_boxes[{k}]") for k, box in enumerate(face_boxes)]
    reference_box = clip_box(reference_face_box, *reference_size, "reference_face_box")
    if all(box is None for box in boxes):
        logger.warning("Face optimisation skipped: no frame has a face box (all `face_boxes` are None).")
        return None
    return FaceOptimizationInputs(config, boxes, reference_box)


def _resize_face(pixels: torch.Tensor) -> torch.Tensor:
    """`(N, 3, h, w)` -> `(N, 3, 112, 112)`: a plain stretch, bilinear, align_corners=False, as the reference."""
    return F.interpolate(pixels, size=(ARCFACE_INPUT_SIZE, ARCFACE_INPUT_SIZE), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------------- models
@contextmanager
def frozen_fp32(*modules: nn.Module) -> Iterator[None]:
    """
    Temporarily cast `modules` to float32 in place, freeze their parameters and put them in eval mode; restore
    dtype, `requires_grad` and training mode afterwards (fp16/bf16 -> fp32 -> back is lossless).
    """
    saved = []
    for module in modules:
        dtype = next(module.parameters()).dtype
        saved.append((module, dtype, module.training, [p.requires_grad for p in module.parameters()]))
        module.requires_grad_(False).eval()
        if dtype != torch.float32:
            nn.Module.to(module, torch.float32)  # plain cast (ModelMixin.to warns about keep-in-fp32 modules)
    try:
        yield
    finally:
        for module, dtype, training, requires_grad in saved:
            if dtype != torch.float32:
                nn.Module.to(module, dtype)
            module.train(training)
            for param, flag in zip(module.parameters(), requires_grad):
                param.requires_grad_(flag)


def reference_face_embedding(face_recognizer: nn.Module, image: PIL.Image.Image, box: Box) -> torch.Tensor:
    """
    The reference identity `(1, D)` float32: the box cropped from the reference at its own resolution, stretched to
    112x112, RGB in [-1, 1], through the frozen recognizer without a graph.
    """
    device = next(face_recognizer.parameters()).device
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    x1, y1, x2, y2 = box
    face = _resize_face(pixels[:, :, y1:y2, x1:x2] / 127.5 - 1.0).to(device)
    with torch.no_grad(), frozen_fp32(face_recognizer):
        return face_recognizer(face).float()


class FaceObjective:
    r"""
    The face loss of x̂0: mean over frames with a face of |1 - cos(ArcFace(face crop of decode(x̂0)), e_ref)|, and
    `refine`, the Adam iterations on x̂0 that `HJBEulerScheduler.step(..., refine_x0=...)` runs in a refined step.

    Evaluate it inside `with objective.prepared():` (`refine` does): there the VAE decoder and the recognizer are
    float32, frozen and in eval mode, and the decoder checkpoints its activations if the config says so. The
    gradient is computed chunk by chunk as the loss is evaluated (`_ChunkwiseLoss`), so only one chunk's
    activations are alive at a time, whatever the number of frames.
    """

    def __init__(
        self,
        vae: nn.Module,
        face_recognizer: nn.Module,
        reference_embedding: torch.Tensor,
        face_boxes: Sequence[Box | None],
        config: FaceOptimizationConfig | None = None,
    ):
        self.vae = vae
        self.face_recognizer = face_recognizer
        self.reference_embedding = reference_embedding.detach().float()
        self.face_boxes = list(face_boxes)
        self.config = config or FaceOptimizationConfig()
        self.face_frames = [k for k, box in enumerate(self.face_boxes) if box is not None]
        self.latent_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.parallel = None  # a TileParallel: each process evaluates its share of the chunks (set by the pipeline)
        self._prepared = False

    def refine(self, x0: torch.Tensor, step_index: int, num_inference_steps: int) -> torch.Tensor:
        """`config.iterations` Adam steps on x̂0 (float32) at this step's learning rate; returns the refined x̂0."""
        x0 = x0.detach().float().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([x0], lr=self.config.learning_rate_at(step_index, num_inference_steps))
        with self.prepared(), torch.enable_grad():
            for _ in range(self.config.iterations):
                optimizer.zero_grad(set_to_none=True)
                self(x0).backward()
                optimizer.step()
        return x0.detach()

    @contextmanager
    def prepared(self) -> Iterator[FaceObjective]:
        checkpointing = self.config.checkpoints_decoder and not self.vae.is_gradient_checkpointing
        with frozen_fp32(self.vae.decoder, self.face_recognizer):
            if checkpointing:
                self.vae.enable_gradient_checkpointing()
            self._prepared = True
            try:
                yield self
            finally:
                self._prepared = False
                if checkpointing:
                    self.vae.disable_gradient_checkpointing()

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        if not self._prepared:
            raise RuntimeError("Call the face objective inside `with objective.prepared():` (it freezes the models and runs them in float32).")
        return _ChunkwiseLoss.apply(x0, self)

    def chunks(self) -> list[list[int]]:
        """The frames with a face, in groups of `config.chunk_size` decoded together."""
        frames, size = self.face_frames, self.config.chunk_size or len(self.face_frames)
        return [frames[start : start + size] for start in range(0, len(frames), size)]

    def chunk_loss(self, x0: torch.Tensor, frames: list[int]) -> torch.Tensor:
        """This chunk's share of the loss: sum over its frames of |1 - cos(e_k, e_ref)|, divided by all face frames."""
        embeddings = self.face_recognizer(self.decode_crops(x0, frames).to(self.reference_embedding.device))
        reference = self.reference_embedding.expand_as(embeddings)
        return (1.0 - F.cosine_similarity(embeddings, reference, dim=1, eps=1e-8)).abs().sum() / len(self.face_frames)

    def decode_faces(self, x0: torch.Tensor) -> torch.Tensor:
        """x̂0 `(1, F, C, h, w)` -> the face crops of the frames with a face, `(K, 3, 112, 112)` RGB in [-1, 1]."""
        return torch.cat([self.decode_crops(x0, frames) for frames in self.chunks()])

    def decode_crops(self, x0: torch.Tensor, frames: list[int]) -> torch.Tensor:
        """Decode one chunk of frames (together: the temporal decoder mixes neighbouring frames) and crop the faces."""
        if x0.ndim != 5 or x0.shape[0] != 1 or x0.shape[1] != len(self.face_boxes):
            raise ValueError(f"Expected x̂0 of shape (1, {len(self.face_boxes)}, C, h, w), got {tuple(x0.shape)}.")
        boxes = [self.face_boxes[k] for k in frames]
        windows = self.latent_windows(boxes, x0.shape[-2:])
        latents = torch.stack([x0[0, k, :, y1:y2, x1:x2] for k, (x1, y1, x2, y2) in zip(frames, windows)])
        pixels = self.vae.decode(latents.float() / self.vae.config.scaling_factor, num_frames=len(frames)).sample.float().clamp(-1.0, 1.0)
        s = self.latent_scale  # a box in output pixels, relative to its frame's window origin
        return torch.cat([_resize_face(pixels[j : j + 1, :, y1 - wy * s : y2 - wy * s, x1 - wx * s : x2 - wx * s])
                          for j, ((x1, y1, x2, y2), (wx, wy, _, _)) in enumerate(zip(boxes, windows))])

    def latent_windows(self, boxes: Sequence[Box], latent_size: tuple[int, int]) -> list[Box]:
        """
        The latent `(x1, y1, x2, y2)` decoded for each frame of a chunk: everything (`"full"`), or a window that
        follows each frame's face. Its size depends only on the size of the chunk's largest face: the most latent
        cells a box that size can touch wherever it lies, plus `margin` on each side. So the frames of a chunk
        decode together, and a face costs the same (time and memory) still or moving, wherever it is. Each
        frame's window is centred on the cells its own box touches and kept inside the latent.
        """
        h, w = latent_size
        if self.config.mode == "full":
            return [(0, 0, w, h)] * len(boxes)
        s, m = self.latent_scale, self.config.margin

        def most_cells(length: int) -> int:  # a span of `length` pixels touches at most this many cells of size s
            return (length + s - 2) // s + 1

        width = min(max(most_cells(x2 - x1) for x1, _, x2, _ in boxes) + 2 * m, w)
        height = min(max(most_cells(y2 - y1) for _, y1, _, y2 in boxes) + 2 * m, h)
        windows = []
        for x1, y1, x2, y2 in boxes:
            cx1, cy1, cx2, cy2 = x1 // s, y1 // s, math.ceil(x2 / s), math.ceil(y2 / s)  # the cells this box touches
            wx = min(max(cx1 - (width - (cx2 - cx1)) // 2, 0), w - width)
            wy = min(max(cy1 - (height - (cy2 - cy1)) // 2, 0), h - height)
            windows.append((wx, wy, wx + width, wy + height))
        return windows


class _ChunkwiseLoss(torch.autograd.Function):
    """
    The face loss with its gradient computed chunk by chunk during the forward pass: each chunk's graph (decoder
    and recognizer activations) is freed before the next chunk is decoded, so memory does not grow with the
    number of frames. The loss is a sum over chunks, so the summed chunk gradients are exactly its gradient.
    """

    @staticmethod
    def forward(ctx, x0: torch.Tensor, objective: FaceObjective) -> torch.Tensor:
        loss, grad = torch.zeros((), device=x0.device), torch.zeros_like(x0)
        chunks = objective.chunks() if objective.parallel is None else objective.parallel.share(objective.chunks())
        for frames in chunks:
            with torch.enable_grad():
                x = x0.detach().requires_grad_(True)
                chunk_loss = objective.chunk_loss(x, frames)
                (chunk_grad,) = torch.autograd.grad(chunk_loss, x)
            loss += chunk_loss.detach().to(loss.device)
            grad += chunk_grad
        if objective.parallel is not None:  # the other processes' chunks: every process takes the same Adam step
            objective.parallel.all_reduce_sum(loss, grad)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None


def build_face_objective(
    vae: nn.Module,
    face_recognizer: nn.Module,
    reference_image: PIL.Image.Image,
    inputs: FaceOptimizationInputs,
) -> FaceObjective:
    """The face objective for one pipeline call, from the inputs checked by `check_face_optimization_inputs`."""
    if face_recognizer is None:
        raise ValueError(NO_RECOGNIZER_MESSAGE)
    reference = reference_face_embedding(face_recognizer, reference_image, inputs.reference_face_box)
    return FaceObjective(vae, face_recognizer, reference, inputs.face_boxes, inputs.config)
