#!/usr/bin/env python
"""Peak memory of a StableAnimator training step (forward, backward, AdamW step).

    python benchmarks/bench_training_memory.py --device simulate --arch full --mode lora --lora-rank 64 \
        --gradient-checkpointing --sizes 512x512x8 512x512x16

* `--arch full`: the real architecture (SVD-xt UNet + ID-Adapter, temporal VAE, CLIP ViT-H, PoseNet,
  FaceEncoder) with random weights, built on the meta device (no checkpoint download). `--arch tiny`: the
  test-size pipeline.
* Precision as the training script under `--mixed-precision fp16`: frozen VAE/CLIP (and, for LoRA, the frozen
  UNet/PoseNet/FaceEncoder) in fp16, what trains in fp32, the forward under fp16 autocast.
* `--device cuda`: `torch.cuda.max_memory_allocated`.
* `--device simulate`: the same step on fake tensors (no GPU, no memory, seconds per step on a CPU), counting what
  CUDA would allocate; see `simulated_memory.py` for what it models. It reproduces the official README's full
  training figures (about 40 GB at 512x512 and 70 GB at 576x1024, 16 frames, with checkpointing).
* `--device cpu`: the process's peak RSS, everything in float32 (weights included; small sizes only).

Each size runs two steps and reports the second, whose peak includes the AdamW states created by the first
(the steady state of a training run).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time

import torch
from memory_stats import peak_bytes, reset_peak

GiB = 1024**3


def tiny_components(device):
    from diffusers_stableanimator.testing import tiny_random_components

    components = tiny_random_components(with_face_recognizer=False)
    for value in components.values():
        if isinstance(value, torch.nn.Module):
            value.to(device)
    return components


def synthetic_batch(width, height, frames, device, id_dim):
    return {
        "pixel_values": torch.rand(1, frames, 3, height, width, device=device) * 2 - 1,
        "pose_pixels": torch.rand(1, frames, 3, height, width, device=device) * 2 - 1,
        "reference_image": torch.rand(1, 3, height, width, device=device) * 2 - 1,
        "face_masks": (torch.rand(1, frames, 1, height, width, device=device) > 0.8).float(),
        "face_embeds": torch.randn(1, id_dim, device=device) * 20,
    }


def parse_size(text):
    width, height, frames = (int(v) for v in text.lower().split("x"))
    return width, height, frames


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["tiny", "full"], default="tiny")
    p.add_argument("--mode", choices=["full", "lora"], default="lora")
    p.add_argument("--lora-rank", type=int, default=64)
    p.add_argument("--gradient-checkpointing", nargs="?", const="blocks", choices=["blocks", "layers"], default=None,
                   help="as the training script: `blocks` (the default) checkpoints whole UNet blocks and their layers, "
                        "`layers` only what diffusers checkpoints")
    p.add_argument("--sizes", nargs="+", default=["64x64x2", "64x64x4"], help="WxHxF sizes to run, smallest first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "simulate", help="cuda, simulate or cpu")
    args = p.parse_args(argv)

    from diffusers_stableanimator.testing import full_size_random_components
    from diffusers_stableanimator.training import configure_trainable, training_loss

    simulate = args.device == "simulate"
    device = torch.device("meta" if simulate else args.device)
    start = time.perf_counter()
    c = full_size_random_components(device) if args.arch == "full" else tiny_components(device)
    frozen_dtype = torch.float16 if simulate or device.type == "cuda" else torch.float32
    c["vae"].requires_grad_(False).to(dtype=frozen_dtype)
    c["image_encoder"].requires_grad_(False).to(dtype=frozen_dtype)
    rank = args.lora_rank if args.mode == "lora" else 0
    if rank:  # as the training script: LoRA keeps the frozen base in fp16 on a GPU, what trains in fp32
        for key in ("unet", "pose_net", "face_encoder"):
            c[key].to(dtype=frozen_dtype)
    # LoRA: also the ID-Adapter, PoseNet and FaceEncoder, the most the training script's LoRA options train
    params = configure_trainable(c["unet"], c["pose_net"], c["face_encoder"], lora_rank=rank, train_id_adapter=True)
    for param in params:
        param.data = param.data.float()
    if args.gradient_checkpointing:
        c["unet"].enable_gradient_checkpointing()
    if args.gradient_checkpointing == "blocks":
        c["unet"].enable_block_checkpointing()
    modules = [c[k] for k in ("unet", "vae", "image_encoder", "pose_net", "face_encoder")]
    n_trained = sum(p.numel() for p in params)
    n_all = sum(p.numel() for m in modules for p in m.parameters())

    measured = contextlib.nullcontext
    reset, read_peak = functools.partial(reset_peak, device), functools.partial(peak_bytes, device)
    if device.type == "cuda":  # as `accelerate launch --mixed_precision fp16`
        autocast, kind = functools.partial(torch.autocast, "cuda", dtype=torch.float16), "allocated"
    else:
        autocast, kind = contextlib.nullcontext, "RSS"  # float32 on the CPU
    if simulate:  # the same modules on fake CPU tensors, counted as CUDA would allocate them (simulated_memory.py)
        from torch._subclasses.fake_tensor import FakeTensorMode

        from simulated_memory import LiveTensorBytes, cuda_autocast_policy, to_fake

        fake_mode, tracker = FakeTensorMode(), LiveTensorBytes()
        for module in modules:
            to_fake(module, fake_mode)
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        tracker.track(p for m in modules for p in [*m.parameters(), *m.buffers()])
        device = torch.device("cpu")

        @contextlib.contextmanager
        def measured():  # the policy acts wherever CPU autocast is on, checkpoint recomputation included
            with fake_mode, tracker, cuda_autocast_policy():
                yield

        autocast, kind = functools.partial(torch.autocast, "cpu", dtype=torch.float16), "simulated CUDA allocated"
        reset, read_peak = tracker.reset_peak, lambda: tracker.peak

    optimizer = torch.optim.AdamW(params, lr=1e-5)
    print(f"arch={args.arch} mode={args.mode}{f' rank={rank}' if rank else ''} checkpointing={args.gradient_checkpointing} "
          f"device={args.device}: {n_all / 1e6:.0f} M parameters, {n_trained / 1e6:.1f} M trained (built in {time.perf_counter() - start:.0f}s)")

    id_dim = c["face_encoder"].config.id_embeddings_dim
    for size in args.sizes:
        width, height, frames = parse_size(size)
        t0 = time.perf_counter()
        for _ in range(2):  # the second step has the AdamW states the first created
            with measured():
                reset()
                batch = synthetic_batch(width, height, frames, device, id_dim)
                with autocast():
                    loss = training_loss(batch, c["vae"], c["image_encoder"], c["feature_extractor"], c["unet"], c["pose_net"], c["face_encoder"])
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                del batch, loss
        print(f"  {width}x{height}, {frames} frames: peak {kind} {read_peak() / GiB:.2f} GiB ({(time.perf_counter() - t0) / 2:.1f}s per step)")


if __name__ == "__main__":
    main()
