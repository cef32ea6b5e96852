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
