#!/usr/bin/env python
"""Peak memory of one StableAnimator training step (forward, backward, AdamW step).

    python benchmarks/bench_training_memory.py --arch full --mode lora --lora-rank 64 --gradient-checkpointing \\
        --sizes 64x64x2 64x64x4 --estimate 512x512x16

* `--arch full`: the real architecture (SVD-xt UNet + ID-Adapter, temporal VAE, CLIP ViT-H, PoseNet,
  FaceEncoder) with random weights, built on the meta device and materialised on the target device
  (no checkpoint download). `--arch tiny`: the test-size pipeline.
* On CUDA: `torch.cuda.max_memory_allocated` per size (reset between sizes); frozen VAE/CLIP in fp16, the step
  under fp16 autocast (as `--mixed-precision fp16`).
* On CPU: the process's peak RSS after each size (sizes are run smallest first, so each peak belongs to its size);
  everything in float32.

`--estimate WxHxF` extrapolates to a size that was not run: the parameter-bound part (weights, gradients, AdamW
states) is computed exactly from parameter counts for a GPU run (frozen weights fp16; trained weights, gradients
and two AdamW moments fp32); the activation part grows linearly with the number of latent elements, with the slope
measured between the two largest sizes run (halved for fp16 autocast when the measurement was in fp32).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

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


def peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def parse_size(text):
    width, height, frames = (int(v) for v in text.lower().split("x"))
    return width, height, frames


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["tiny", "full"], default="tiny")
    p.add_argument("--mode", choices=["full", "lora"], default="lora")
    p.add_argument("--lora-rank", type=int, default=64)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--block-checkpointing", action="store_true", help="also checkpoint whole UNet blocks")
    p.add_argument("--sizes", nargs="+", default=["64x64x2", "64x64x4"], help="WxHxF sizes to run, smallest first")
    p.add_argument("--estimate", default=None, help="WxHxF to extrapolate to, e.g. 512x512x16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    from diffusers_stableanimator.testing import full_size_random_components
    from diffusers_stableanimator.training import configure_trainable, training_loss

    device = torch.device(args.device)
    start = time.perf_counter()
    c = full_size_random_components(device) if args.arch == "full" else tiny_components(device)
    frozen_dtype = torch.float16 if device.type == "cuda" else torch.float32
    c["vae"].requires_grad_(False).to(dtype=frozen_dtype)
    c["image_encoder"].requires_grad_(False).to(dtype=frozen_dtype)
    rank = args.lora_rank if args.mode == "lora" else 0
    if rank:  # as the training script: LoRA keeps the frozen base in fp16 on a GPU, what trains in fp32
        for key in ("unet", "pose_net", "face_encoder"):
            c[key].to(dtype=frozen_dtype)
    params = configure_trainable(c["unet"], c["pose_net"], c["face_encoder"], lora_rank=rank)
    for param in params:
        param.data = param.data.float()
    if args.gradient_checkpointing:
        c["unet"].enable_gradient_checkpointing()
    if args.block_checkpointing:
        c["unet"].enable_block_checkpointing()
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    n_trained = sum(p.numel() for p in params)
    n_all = sum(p.numel() for k in ("unet", "vae", "image_encoder", "pose_net", "face_encoder") for p in c[k].parameters())
    print(f"arch={args.arch} mode={args.mode}{f' rank={rank}' if rank else ''} checkpointing={args.gradient_checkpointing} blocks={args.block_checkpointing} "
          f"device={device}: {n_all / 1e6:.0f} M parameters, {n_trained / 1e6:.1f} M trained (built in {time.perf_counter() - start:.0f}s)")

    id_dim = c["face_encoder"].config.id_embeddings_dim
    results = []
    for size in args.sizes:
        width, height, frames = parse_size(size)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        batch = synthetic_batch(width, height, frames, device, id_dim)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            loss = training_loss(batch, c["vae"], c["image_encoder"], c["feature_extractor"], c["unet"], c["pose_net"], c["face_encoder"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        peak = peak_bytes(device)
        results.append((width * height * frames, peak))
        print(f"  {width}x{height}, {frames} frames: peak {'allocated' if device.type == 'cuda' else 'RSS'} "
              f"{peak / GiB:.2f} GiB, step {time.perf_counter() - t0:.1f}s, loss {loss.item():.3g}")

    if args.estimate:
        if len(results) < 2:
            sys.exit("--estimate needs at least two --sizes to measure how activations grow.")
        (e1, p1), (e2, p2) = results[-2], results[-1]
        slope = max(0.0, (p2 - p1) / (e2 - e1))  # bytes per pixel-frame
        if device.type != "cuda":
            slope /= 2  # fp16 autocast on a GPU roughly halves the stored activations
        width, height, frames = parse_size(args.estimate)
        n_frozen = n_all - n_trained
        static = n_frozen * 2 + n_trained * (4 + 4 + 8)  # fp16 frozen; fp32 weights + grads + 2 AdamW moments
        activations = slope * width * height * frames
        print(f"  estimate for {args.estimate} on a GPU (fp16 mixed precision): {(static + activations) / GiB:.1f} GiB "
              f"= {static / GiB:.1f} GiB weights/grads/optimizer + {activations / GiB:.1f} GiB activations")


if __name__ == "__main__":
    main()
