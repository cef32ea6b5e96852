"""Face optimisation cost: one refined step ("full" vs "face_crop") with full-size models (random weights).

Measures, for the same x̂0, the wall time and peak memory of `FaceObjective.refine` (the objective's
forward + backward, `--iterations` times) with SVD's temporal VAE decoder architecture and an IResNet-100
recognizer, and how far the two modes agree (loss and gradient direction at x̂0). Each mode runs in a fresh
subprocess after one untimed warm-up iteration; CPU peak memory is the peak RSS (VmHWM, reset after the
warm-up) minus the RSS before the step, CUDA peak memory is `torch.cuda.max_memory_allocated`.

    python benchmarks/bench_face_optimization.py                       # 512x512, 4 frames, CPU
    python benchmarks/bench_face_optimization.py --device cuda --iterations 3
    python benchmarks/bench_face_optimization.py --margin-sweep        # decoder error in the face box vs margin
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from memory_stats import current_bytes, peak_bytes, reset_peak

# SVD's `vae/config.json` (the diffusers default config of AutoencoderKLTemporalDecoder is a toy one).
SVD_VAE_CONFIG = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    scaling_factor=0.18215,
)


def face_box(width: int, height: int) -> tuple[int, int, int, int]:
    """A face box covering 1/16 of the frame (a quarter of each side), in the upper middle, on the latent grid."""
    w, h = width // 4, height // 4
    x1, y1 = (width - w) // 2 // 8 * 8, height // 8 // 8 * 8
    return x1, y1, x1 + w, y1 + h


def build(args):
    from diffusers import AutoencoderKLTemporalDecoder
    from PIL import Image

    from diffusers_stableanimator import ArcFaceIResNet
    from diffusers_stableanimator.face_optimization import FaceOptimizationConfig, FaceOptimizationInputs, build_face_objective

    torch.manual_seed(args.seed)
    vae = AutoencoderKLTemporalDecoder(**SVD_VAE_CONFIG).eval().to(args.device)
    recognizer = ArcFaceIResNet().eval().to(args.device)  # IResNet-100
    generator = torch.Generator().manual_seed(args.seed)
    reference = Image.fromarray(torch.randint(0, 256, (256, 256, 3), generator=generator, dtype=torch.uint8).numpy())
    x0 = torch.randn(1, args.frames, 4, args.height // 8, args.width // 8, generator=generator).to(args.device)
    boxes = [face_box(args.width, args.height)] * args.frames
    config = FaceOptimizationConfig(mode=args.mode, margin=args.margin, iterations=args.iterations, chunk_size=args.decode_chunk_size,
                                    gradient_checkpointing=args.checkpointing)
    inputs = FaceOptimizationInputs(config, boxes, reference_face_box=(64, 48, 192, 208))
    return vae, build_face_objective(vae, recognizer, reference, inputs), x0


def run_mode(args) -> None:
    """Child process: one refined step in one mode; writes figures (and the gradient at x̂0) to `args.out`."""
    vae, objective, x0 = build(args)

    def loss_and_grad():  # at x̂0 itself: what the first Adam iteration sees
        x = x0.clone().requires_grad_(True)
        with objective.prepared():
            loss = objective(x)
            loss.backward()
        return loss.item(), x.grad.detach().cpu()

    device = torch.device(args.device)
    if args.warmup:  # one untimed forward + backward: CPU kernels are set up per input shape on first use
        loss, grad = loss_and_grad()
    reset_peak(device)
    base = current_bytes(device)
    start = time.perf_counter()
    objective.refine(x0, step_index=0, num_inference_steps=25)
    peak = peak_bytes(device) - base  # synchronises a GPU before the time is read
    seconds = time.perf_counter() - start
    if not args.warmup:
        loss, grad = loss_and_grad()
    torch.save({"seconds": seconds, "peak_bytes": peak, "loss": loss, "grad": grad}, args.out)


def margin_sweep(args) -> None:
    """Forward only: max |pixel error| inside the face box when decoding a latent window vs the whole frame."""
    from diffusers import AutoencoderKLTemporalDecoder

    from diffusers_stableanimator.face_optimization import FaceObjective, FaceOptimizationConfig

    torch.manual_seed(args.seed)
    vae = AutoencoderKLTemporalDecoder(**SVD_VAE_CONFIG).eval().to(args.device)
    x0 = torch.randn(1, args.frames, 4, args.height // 8, args.width // 8).to(args.device)
    box = face_box(args.width, args.height)
    with torch.no_grad():
        reference = None
        for margin in [None] + args.margins:
            mode = "full" if margin is None else "face_crop"
            config = FaceOptimizationConfig(mode=mode, margin=margin or 0, chunk_size=args.decode_chunk_size)
            objective = FaceObjective(vae, torch.nn.Identity(), torch.zeros(1), [box] * args.frames, config)
            start = time.perf_counter()
            crops = objective.decode_faces(x0)
            seconds = time.perf_counter() - start
            if reference is None:
                reference = crops
                print(f"full frame: decode {seconds:.1f} s")
                continue
            err = (crops - reference).abs()
            print(f"margin {margin:3d} latent px ({margin * 8:3d} px): max |error| {err.max():.4f}, mean {err.mean():.5f} (pixels in [-1, 1]); decode {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=3, help="Adam iterations per refined step (reference: 3)")
    parser.add_argument("--decode-chunk-size", type=int, default=1, help="frames decoded together (1 keeps \"full\" within 24 GB on CPU)")
    parser.add_argument("--margin", type=int, default=2, help="face_crop margin in latent pixels")
    parser.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=None,
                        help="recompute decoder activations in the backward pass (default: the config's choice, on in full mode only)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="time the first (cold) iteration too")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin-sweep", action="store_true", help="print decode error in the box vs margin and exit")
    parser.add_argument("--margins", type=int, nargs="+", default=[0, 1, 2, 4, 6, 8, 12, 16])
    parser.add_argument("--mode", choices=["full", "face_crop"], help=argparse.SUPPRESS)  # child process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.margin_sweep:
        return margin_sweep(args)
    if args.mode:
        return run_mode(args)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("full", "face_crop"):
            out = os.path.join(tmp, f"{mode}.pt")
            child = [a for a in sys.argv[1:]] + ["--mode", mode, "--out", out]
            subprocess.run([sys.executable, os.path.abspath(__file__), *child], check=True)
            results[mode] = torch.load(out)
    full, crop = results["full"], results["face_crop"]
    box = face_box(args.width, args.height)
    print(f"device {args.device}, {args.width}x{args.height}, {args.frames} frames, face box {box} (1/16 of the frame), "
          f"{args.iterations} Adam iteration(s), decode_chunk_size {args.decode_chunk_size}, margin {args.margin}, "
          f"checkpointing {'auto' if args.checkpointing is None else args.checkpointing}, warm-up {args.warmup}; SVD VAE decoder + IResNet-100, random weights")
    memory = "peak CUDA allocated" if args.device.startswith("cuda") else "peak RSS - RSS before"
    for mode, r in results.items():
        print(f"  {mode:9s}: {r['seconds']:8.1f} s   {memory}: {r['peak_bytes'] / 2**30:7.2f} GiB   loss {r['loss']:.6f}")
    cosine = torch.nn.functional.cosine_similarity(full["grad"].flatten(), crop["grad"].flatten(), dim=0).item()
    print(f"  face_crop vs full: {full['seconds'] / crop['seconds']:.1f}x faster, {full['peak_bytes'] / max(crop['peak_bytes'], 1):.1f}x less memory; "
          f"|loss difference| {abs(full['loss'] - crop['loss']):.2e}, gradient cosine {cosine:.4f}")
    print(json.dumps({m: {"seconds": r["seconds"], "peak_gib": r["peak_bytes"] / 2**30, "loss": r["loss"]} for m, r in results.items()} | {"grad_cosine": cosine}))


if __name__ == "__main__":
    main()
