"""Seconds per denoising step, seconds for the VAE decode, and peak memory, for each memory preset.

    python benchmarks/bench_pipeline.py --arch full --width 576 --height 1024 --frames 16 --device cuda
    python benchmarks/bench_pipeline.py --arch full --width 576 --height 1024 --frames 16 --device simulate
    python benchmarks/bench_pipeline.py --arch tiny                          # CPU, seconds

Weights are random (speed and memory do not depend on them). `--arch full` builds the full-size SVD-xt
architecture (UNet 1.5 B parameters, SVD VAE, CLIP ViT-H/14 vision tower, PoseNet, FaceEncoder). Each preset
runs in a fresh subprocess, so one preset's allocations do not hide another's. Peak memory is
`torch.cuda.max_memory_allocated` on CUDA and the process's peak RSS on CPU (which includes the weights), for the
whole run and separately for denoising (encoders included) and for the VAE decode.
Note the (H, W) order: SVD-xt portrait output is 576 wide and 1024 high (`--width 576 --height 1024`).

`--device simulate` (full architecture, fp16) needs no GPU: each stage of a call (CLIP, VAE encoding of the
reference, PoseNet, one denoising step over every tile, the chunked VAE decode) runs through the pipeline's own
code on fake tensors (see `simulated_memory.py`), and the peak of what CUDA would allocate is reported per preset:
all weights plus the largest stage for `high`; for the offloading presets, the largest stage plus the weights of
the one model on the GPU during it. No timings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def build_pipeline(arch: str):
    from diffusers_stableanimator import StableAnimatorPipeline
    from diffusers_stableanimator.testing import full_size_random_components, tiny_random_pipeline

    if arch == "tiny":
        return tiny_random_pipeline()
    return StableAnimatorPipeline(**full_size_random_components())


def run_preset(args) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from diffusers_stableanimator.memory_presets import apply_memory_preset, resolve_dtype
    from memory_stats import peak_bytes, reset_peak

    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    pipe = build_pipeline(args.arch).to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    call_kwargs = apply_memory_preset(pipe, args.preset, device)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8))
    poses = [Image.fromarray(rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)) for _ in range(args.frames)]
    face = torch.randn(pipe.face_encoder.config.id_embeddings_dim)
    reset_peak(device)

    step_times = []
    last = [time.perf_counter()]

    def on_step(pipe, i, t, tensors):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        return tensors

    start = time.perf_counter()
    latents = pipe(image, poses, face_embeds=face, num_inference_steps=args.steps, tile_size=args.tile_size, tile_overlap=args.tile_overlap,
                   output_type="latent", callback_on_step_end=on_step, **call_kwargs).frames
    denoise_peak = peak_bytes(device)
    with torch.no_grad():
        pipe.vae.to(device)  # offload hooks move it on first use; keep the timing to the decode itself
    reset_peak(device)
    decode_start = time.perf_counter()
    with torch.no_grad():
        pipe.decode_latents(latents, call_kwargs["decode_chunk_size"])
    decode_seconds = time.perf_counter() - decode_start
    decode_peak = peak_bytes(device)
    return {
        "preset": args.preset,
        "seconds_per_step": sum(step_times[1:]) / max(1, len(step_times) - 1) if len(step_times) > 1 else step_times[0],
        "first_step_seconds": step_times[0],
        "decode_seconds": decode_seconds,
        "total_seconds": time.perf_counter() - start,
        "peak_gib": max(denoise_peak, decode_peak) / 2**30,
        "denoise_peak_gib": denoise_peak / 2**30,
        "decode_peak_gib": decode_peak / 2**30,
        "peak_kind": "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS (weights included)",
    }


def simulate(args) -> None:
    import copy

    import torch
    from simulated_memory import LiveTensorBytes, to_fake
    from torch._subclasses.fake_tensor import FakeTensorMode

    from diffusers_stableanimator import StableAnimatorPipeline
    from diffusers_stableanimator.memory_presets import PRESETS
    from diffusers_stableanimator.testing import full_size_random_components
    from diffusers_stableanimator.tiling import temporal_tiles

    dtype = torch.float16
    c = full_size_random_components("meta")
    vae_encoder = copy.deepcopy(c["vae"])  # the pipeline encodes the reference with the VAE upcast to fp32 (force_upcast)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    models = {"image_encoder": c["image_encoder"], "vae_encode": vae_encoder, "vae": c["vae"], "pose_net": c["pose_net"],
              "face_encoder": c["face_encoder"], "unet": c["unet"]}
    for name, model in models.items():
        to_fake(model.to(torch.float32 if name == "vae_encode" else dtype), fake_mode)
    weights = {name: sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()]) for name, m in models.items()}
    pipe = StableAnimatorPipeline(**c)
    pipe.scheduler.set_timesteps(args.steps)
    t = pipe.scheduler.timesteps[0]
    pipe.scheduler._step_index = 0  # the scheduler's own timestep lookup reads values, which fake tensors do not have
    frames, h, w = args.frames, args.height // 8, args.width // 8
    tiles = temporal_tiles(frames, args.tile_size, args.tile_overlap)

    print(f"full architecture, {args.width}x{args.height} (W x H), {frames} frames, fp16, simulated (no GPU)")
    print(f"weights: {', '.join(f'{m} {b / 2**30:.2f} GiB' for m, b in weights.items())}")
    print(f"{'preset':<10}{'peak GiB':>10}{'denoise':>10}{'decode':>10}{'encoders':>10}  peak stage's model on the GPU (offloading) "
          "| stage columns: tensors without weights")
    for name in args.presets:
        preset = PRESETS[name]
        for module in pipe.unet.modules():  # as apply_memory_preset, and off again for the other presets
            if hasattr(module, "set_chunk_feed_forward"):
                module.set_chunk_feed_forward(chunk_size=1 if preset.forward_chunking else None, dim=1)
        tracker, stages = LiveTensorBytes(), {}

        def stage(model_name, run):
            tracker.reset_peak()
            out = run()
            stages[model_name] = tracker.peak
            return out

        with fake_mode, tracker, torch.no_grad():
            # the tensors the pipeline keeps through a call are created inside the stages and stay alive
            clip = stage("image_encoder", lambda: pipe.image_encoder(torch.randn(1, 3, 224, 224, dtype=dtype)).image_embeds.unsqueeze(1))
            face = stage("face_encoder", lambda: pipe.encode_face(torch.randn(512), clip))
            reference = stage("vae_encode", lambda: vae_encoder.encode(torch.randn(1, 3, args.height, args.width)).latent_dist.mode().to(dtype))
            poses = stage("pose_net", lambda: pipe.pose_net(torch.randn(frames, 3, args.height, args.width, dtype=dtype)))
            conditioning = {
                "encoder_hidden_states": torch.cat([torch.zeros_like(torch.cat([clip, face], 1)), torch.cat([clip, face], 1)]),
                "reference_latents": torch.cat([torch.zeros_like(reference), reference]).unsqueeze(1),
                "added_time_ids": torch.zeros(2, 3, dtype=dtype),
                "pose_latents": poses,
            }
            latents = torch.randn(1, frames, 4, h, w, dtype=dtype)
            guidance = torch.ones(1, frames, 1, 1, 1)
            stage("unet", lambda: pipe.predict_noise(latents, t, conditioning, guidance, tiles))
            stage("vae", lambda: pipe.decode_latents(latents, preset.decode_chunk_size))
        if preset.cpu_offload:
            model, peak = max(((m, weights[m] + p) for m, p in stages.items()), key=lambda item: item[1])
        else:
            model, peak = "all", sum(w for m, w in weights.items() if m != "vae_encode") + max(stages.values())
        print(f"{name:<10}{peak / 2**30:>10.2f}{stages['unet'] / 2**30:>10.2f}{stages['vae'] / 2**30:>10.2f}"
              f"{max(v for k, v in stages.items() if k not in ('unet', 'vae')) / 2**30:>10.2f}  {model}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tile-size", type=int, default=16)
    parser.add_argument("--tile-overlap", type=int, default=4)
    parser.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--presets", nargs="+", default=["high", "balanced", "low"])
    parser.add_argument("--preset", help=argparse.SUPPRESS)  # internal: run one preset in this process
    args = parser.parse_args()

    if args.device == "simulate":
        if args.arch != "full":
            parser.error("--device simulate runs the full architecture: add --arch full")
        simulate(args)
        return
    if args.preset:
        print(json.dumps(run_preset(args)))
        return
    print(f"{args.arch} architecture, {args.width}x{args.height} (W x H), {args.frames} frames, {args.steps} steps, device {args.device}")
    print(f"{'preset':<10}{'s/step':>10}{'decode s':>10}{'peak GiB':>10}{'denoise':>10}{'decode':>10}  memory measured as")
    for preset in args.presets:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--preset", preset]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{r['preset']:<10}{r['seconds_per_step']:>10.3f}{r['decode_seconds']:>10.3f}{r['peak_gib']:>10.2f}"
              f"{r['denoise_peak_gib']:>10.2f}{r['decode_peak_gib']:>10.2f}  {r['peak_kind']}")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
