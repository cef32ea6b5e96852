"""Memory presets: one word for the set of memory/speed trade-offs a run makes.

| preset   | model placement         | UNet feed-forward | VAE decode chunk | dtype on GPU |
|----------|-------------------------|-------------------|------------------|--------------|
| high     | everything on the GPU   | whole             | 8 frames         | bf16 / fp16  |
| balanced | model CPU offload       | whole             | 4 frames         | bf16 / fp16  |
| low      | model CPU offload       | chunked           | 2 frames         | bf16 / fp16  |

Face optimisation always uses the `"face_crop"` decode mode, whose cost is a fraction of a full decode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemoryPreset:
    name: str
    cpu_offload: bool
    forward_chunking: bool
    decode_chunk_size: int


PRESETS = {
    "high": MemoryPreset("high", cpu_offload=False, forward_chunking=False, decode_chunk_size=8),
    "balanced": MemoryPreset("balanced", cpu_offload=True, forward_chunking=False, decode_chunk_size=4),
    "low": MemoryPreset("low", cpu_offload=True, forward_chunking=True, decode_chunk_size=2),
}
NEXT_LOWER = {"high": "balanced", "balanced": "low", "low": None}


def default_dtype(device: torch.device) -> torch.dtype:
    """Half precision on GPUs (bf16 where supported), float32 on CPU (CPU half-precision kernels are slow)."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cast_pipeline(pipe, dtype: torch.dtype):
    """`pipe.to(dtype)` without diffusers' per-model note about modules to keep in float32 (there are none here)."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return pipe.to(dtype=dtype)
    finally:
        logging.set_verbosity(level)


def resolve_device(name: str | None, option: str = "--device") -> torch.device:
    """A torch device from the user's word for it (`None`: CUDA when available, else CPU), refused at once when
    this machine does not have it."""
    from .errors import StableAnimatorError

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise StableAnimatorError(f"{option} {name!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StableAnimatorError(f"{option} {name}: torch sees no CUDA GPU on this machine (a CPU-only torch, or no driver); use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise StableAnimatorError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0.")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise StableAnimatorError(f"{option} {name}: MPS is not available on this machine; use --device cpu.")
    elif device.type != "cpu":
        raise StableAnimatorError(f"{option} {name!r}: use 'cpu', 'cuda' or 'cuda:N'.")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`"fp32"`, `"fp16"`, `"bf16"`, or `"auto"` (the device's `default_dtype`)."""
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(name) or default_dtype(device)


def apply_memory_preset(pipe, preset: str | MemoryPreset, device: str | torch.device) -> dict:
    """Place `pipe` on `device` as the preset says; returns the pipeline call arguments it sets."""
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    device = torch.device(device)
    if preset.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if preset.forward_chunking:
        # Feed-forward layers one frame/position chunk at a time: same result, smaller activation peak.
        pipe.unet.enable_forward_chunking(chunk_size=1, dim=1)
    return {"decode_chunk_size": preset.decode_chunk_size}
