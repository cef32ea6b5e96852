"""FLOPs of the full-size pipeline's stages, counted on fake tensors (no GPU, no weights, no download), and on a
GPU also their seconds, the fraction of the GPU's peak throughput and the peak memory of each stage.

    python benchmarks/flop_counts.py                  # 16 and 64 frames at 512x512 and 576x1024 (W x H)
    python benchmarks/flop_counts.py --frames 16 --sizes 512x512
    python benchmarks/flop_counts.py --device cuda    # the GPU set: random full-size weights on the GPU, no download

With `--device cuda` each stage runs twice on real tensors: once under the counter (a warm-up), once timed; the
GPU table derives the sampling job from the timed tile (25 steps of every tile, plus the encoders) and face
optimisation from one timed objective evaluation (x 63). Not run in CI; no GPU was available when it was written,
so the GPU path is untested.

The full-size architecture (SVD-xt UNet with the ID-Adapter, SVD VAE, CLIP ViT-H/14 vision tower, PoseNet,
FaceEncoder, ArcFace iresnet100) is built on the meta device and run on fake tensors (`FakeTensorMode`: shapes
only) under `torch.utils.flop_counter.FlopCounterMode`, which counts matrix multiplies, convolutions (forward and
backward) and attention: 2 FLOPs per multiply-add, elementwise work not counted. Figures per preset:

* one UNet forward on one 16-frame tile, both guidance branches batched (and the two branches run one at a time,
  as the official pipeline does: same FLOPs, batching saves kernel launches only);
* one denoising step (every tile of the video) and the whole sampling job (25 steps, plus the reference's CLIP
  and VAE encodings, PoseNet on every frame and the face encoder);
* the VAE decode of every frame;
* face optimisation ("HJB") with the default `FaceOptimizationConfig` (3 Adam iterations in each of 21 of the 25
  steps, chunks of 4 face frames, decoder activations kept in "face_crop" mode and recomputed in "full" mode; each
  iteration is a decoder forward and backward, and ArcFace forward and backward), a square face box a quarter of
  the frame wide in every frame, in both decode modes, and its ratio to sampling;
* then, for "face_crop" at 512x512: a face of 1/16 of the frame's area and one of 1/16 of its side, still or
  crossing the frame corner to corner, at each frame count: FLOPs against the sampling job and the peak memory of
  one iteration (the bytes of the tensors it creates, weights and x̂0 excluded; `simulated_memory.LiveTensorBytes`).

Attention on CPU fake tensors dispatches to `_scaled_dot_product_flash_attention_for_cpu`, which torch's counter
does not know; it is registered here with torch's own attention formula.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).parent))
from simulated_memory import to_fake  # noqa: E402

STEPS, FACE_STEPS, FACE_ITERATIONS = 25, 21, 3  # FaceOptimizationConfig's defaults: steps 0-20 of 25, 3 iterations
TILE_SIZE, TILE_OVERLAP = 16, 4

try:
    @register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
    def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)
except (AttributeError, RuntimeError):  # an older torch without this kernel, or one that already counts it
    pass


def build(fake_mode, device: str = "meta"):
    """The full-size models, on fake tensors (or with random weights on `device`): UNet, CLIP, PoseNet, FaceEncoder
    in fp16; VAE and ArcFace in fp32 (face optimisation runs them in float32; so does the decode timed here)."""
    from diffusers_stableanimator.models import ArcFaceIResNet
    from diffusers_stableanimator.testing import full_size_random_components

    components = full_size_random_components(device=device)
    with torch.device(device):
        components["face_recognizer"] = ArcFaceIResNet().eval()
    for name in ("unet", "image_encoder", "pose_net", "face_encoder", "vae", "face_recognizer"):
        module = components[name]
        module.to(torch.float16) if name in ("unet", "image_encoder", "pose_net", "face_encoder") else None
        if device == "meta":
            to_fake(module.eval(), fake_mode)
        else:
            module.eval()
    return components


# Dense fp16/bf16 tensor-core peaks (TFLOP/s) of common GPUs; others: pass --peak-tflops.
PEAK_TFLOPS = {"H200": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "A100": 312.0, "L40S": 362.0}


MEASURED: dict | None = None  # with --device cuda: label -> [seconds, peak bytes], the stages timed as well as counted


def count(function, label: str | None = None) -> int:
    """FLOPs of `function()`; with --device cuda also its seconds (a second run, without the counter's overhead,
    the first one being the warm-up) and the peak memory allocated during it."""
    with FlopCounterMode(display=False) as counter:
        function()
    if MEASURED is not None and label is not None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        seconds, peak = MEASURED.setdefault(label, [0.0, 0])
        MEASURED[label] = [seconds + time.perf_counter() - start, max(peak, torch.cuda.max_memory_allocated())]
    return counter.get_total_flops()


def unet_tile_flops(unet, frames: int, h: int, w: int, batch: int) -> int:
    dim = unet.config.cross_attention_dim
    x = torch.zeros(batch, frames, 8, h, w, dtype=torch.float16)
    context = torch.zeros(batch, 1 + unet.config.num_face_tokens, dim, dtype=torch.float16)
    pose = torch.zeros(batch * frames, unet.config.block_out_channels[0], h, w, dtype=torch.float16)
    ids = torch.zeros(batch, 3, dtype=torch.float16)
    with torch.no_grad():
        return count(lambda: unet(x, torch.tensor(1.0), encoder_hidden_states=context, added_time_ids=ids, pose_latents=pose, return_dict=False), f"unet batch {batch}")


def encoders_flops(c, frames: int, height: int, width: int) -> int:
    with torch.no_grad():
        clip = count(lambda: c["image_encoder"](torch.zeros(1, 3, 224, 224, dtype=torch.float16)), "encoders")
        vae = count(lambda: c["vae"].encode(torch.zeros(1, 3, height, width)), "encoders")
        pose = count(lambda: c["pose_net"](torch.zeros(frames, 3, height, width, dtype=torch.float16)), "encoders")
        face = count(lambda: c["face_encoder"](torch.zeros(1, 512, dtype=torch.float16), torch.zeros(1, 1, 1024, dtype=torch.float16)), "encoders")
    return clip + vae + pose + face


def decode_flops(vae, frames: int, h: int, w: int, chunk: int = 8) -> int:
    with torch.no_grad():
        return sum(count(lambda n=n: vae.decode(torch.zeros(n, 4, h, w), num_frames=n), "decode") for n in _chunks(frames, chunk))


def _chunks(frames: int, chunk: int) -> list[int]:
    return [min(chunk, frames - start) for start in range(0, frames, chunk)]


def face_box(width: int, height: int, fraction: float, frame: int = 0, frames: int = 1, moving: bool = False) -> tuple:
    """A square face box `fraction` of the frame's short side wide: centred in the upper third (still), or crossing
    the frame from its top-left to its bottom-right corner over the video (moving)."""
    side = int(min(width, height) * fraction)
    if not moving:
        x1, y1 = width // 2 - side // 2, height // 6
    else:
        t = frame / max(frames - 1, 1)
        x1, y1 = round(t * (width - side)), round(t * (height - side))
    return x1, y1, x1 + side, y1 + side


def face_evaluation(c, frames: int, height: int, width: int, mode: str = "face_crop", boxes=None, **config) -> tuple[int, int]:
    """One evaluation of the face objective and its gradient (what each Adam iteration costs) with the default
    `FaceOptimizationConfig` (plus `config`): its FLOPs, and the peak bytes of the tensors it creates (weights and
    x̂0 excluded), counted on fake tensors."""
    from diffusers_stableanimator.face_optimization import FaceObjective, FaceOptimizationConfig
    from simulated_memory import LiveTensorBytes

    boxes = boxes or [face_box(width, height, 1 / 4)] * frames
    objective = FaceObjective(c["vae"], c["face_recognizer"], torch.zeros(1, 512), boxes, FaceOptimizationConfig(mode=mode, **config))
    x0 = torch.zeros(1, frames, 4, height // 8, width // 8, requires_grad=True)
    with objective.prepared(), torch.enable_grad():
        flops = count(lambda: objective(x0).backward(), mode)
        with LiveTensorBytes() as live:
            objective(x0).backward()
    return flops, live.peak


def face_table(c, fake_mode, frame_counts: list[int], width: int = 512, height: int = 512) -> None:
    """Face optimisation with the default config against the sampling job, per face size, motion and frame count."""
    print(f"\nFace optimisation, default FaceOptimizationConfig (face_crop, margin 2, chunks of 4, {FACE_STEPS} steps x "
          f"{FACE_ITERATIONS} iterations), {width}x{height}:")
    print("| face | motion | frames | face opt. TFLOP | sampling TFLOP | face opt. / sampling | peak GiB of one iteration |")
    print("|---|---|---|---|---|---|---|")
    from diffusers_stableanimator.tiling import temporal_tiles

    with fake_mode:
        tile = unet_tile_flops(c["unet"], TILE_SIZE, height // 8, width // 8, batch=2)
        for label, fraction in (("1/16 of the area (a quarter of each side)", 1 / 4), ("1/16 of each side", 1 / 16)):
            for moving in (False, True):
                for frames in frame_counts:
                    sampling = STEPS * tile * len(temporal_tiles(frames, TILE_SIZE, TILE_OVERLAP)) + encoders_flops(c, frames, height, width)
                    boxes = [face_box(width, height, fraction, k, frames, moving) for k in range(frames)]
                    flops, peak = face_evaluation(c, frames, height, width, boxes=boxes)
                    face = FACE_STEPS * FACE_ITERATIONS * flops
                    print(f"| {label} | {'moving corner to corner' if moving else 'still'} | {frames} | {face / 1e12:.0f} | {sampling / 1e12:.0f} "
                          f"| {face / sampling:.2f} | {peak / 2**30:.3f} |", flush=True)


def gpu_row(width, height, frames, tiles, tile_flops, measured, peak) -> str:
    """One row of GPU figures from the stages timed for this preset (sampling = 25 steps of every tile + encoders;
    face optimisation = 21 steps x 3 iterations of one objective evaluation)."""
    tile_s = measured["unet batch 2"][0]
    step_s = tile_s * tiles
    sampling_s = STEPS * step_s + measured["encoders"][0]
    face = {mode: FACE_STEPS * FACE_ITERATIONS * measured[mode][0] for mode in ("face_crop", "full")}
    rate = tile_flops / tile_s / 1e12
    gib = [measured[key][1] / 2**30 for key in ("unet batch 2", "decode", "face_crop", "full")]
    return (f"| {width}x{height} | {frames} | {tile_s:.3f} | {rate:.0f} | {f'{rate / peak:.0%}' if peak else 'n/a'} | {step_s:.2f} "
            f"| {sampling_s:.1f} | {measured['decode'][0]:.2f} | {face['face_crop']:.1f} | {face['full']:.1f} "
            f"| {face['face_crop'] / sampling_s:.2f} | {face['full'] / sampling_s:.2f} | {', '.join(f'{g:.1f}' for g in gib)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--sizes", nargs="+", default=["512x512", "576x1024"], help="W x H")
    parser.add_argument("--device", choices=("fake", "cuda"), default="fake",
                        help="cuda: also time each stage on the GPU with random full-size weights (no download)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense fp16 peak (default: known GPUs only)")
    args = parser.parse_args()
    from diffusers_stableanimator.tiling import temporal_tiles

    global MEASURED
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    if args.device == "cuda":
        MEASURED = {}
        fake_mode = contextlib.nullcontext()  # real tensors, created on the GPU
        torch.set_default_device("cuda")
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or next((value for key, value in PEAK_TFLOPS.items() if key in name), None)
        print(f"{name}: peak {peak or 'unknown (pass --peak-tflops)'} TFLOP/s dense fp16")
    if args.device == "cuda" and min(args.frames) < TILE_SIZE:
        parser.error(f"--device cuda times {TILE_SIZE}-frame tiles: give --frames of at least {TILE_SIZE}")
    c = build(fake_mode, "cuda" if args.device == "cuda" else "meta")
    T = 1e12
    timings = []
    print("| size (W x H) | frames | tiles | UNet tile fwd, CFG batched | same, branches apart | 1 step | sampling job (25 steps + encoders) "
          "| decode | face opt. face_crop | face opt. full | face_crop / sampling | full / sampling | full / face_crop |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        width, height = map(int, size.split("x"))
        h, w = height // 8, width // 8
        with fake_mode:
            tile = unet_tile_flops(c["unet"], TILE_SIZE, h, w, batch=2)
            apart = 2 * unet_tile_flops(c["unet"], TILE_SIZE, h, w, batch=1)
            unet_measured = dict(MEASURED or {})  # the tile timing serves every frame count of this size
            for frames in args.frames:
                tiles = temporal_tiles(frames, TILE_SIZE, TILE_OVERLAP)
                step = tile * len(tiles) if frames >= TILE_SIZE else unet_tile_flops(c["unet"], frames, h, w, batch=2)
                sampling = STEPS * step + encoders_flops(c, frames, height, width)
                decode = decode_flops(c["vae"], frames, h, w)
                face = {mode: FACE_STEPS * FACE_ITERATIONS * face_evaluation(c, frames, height, width, mode)[0] for mode in ("face_crop", "full")}
                print(f"| {width}x{height} | {frames} | {len(tiles)} | {tile / T:.1f} | {apart / T:.1f} ({apart / tile - 1:+.3%}) | {step / T:.0f} "
                      f"| {sampling / T:.0f} | {decode / T:.1f} | {face['face_crop'] / T:.0f} | {face['full'] / T:.0f} "
                      f"| {face['face_crop'] / sampling:.2f} | {face['full'] / sampling:.2f} | {face['full'] / face['face_crop']:.1f}x |", flush=True)
                if MEASURED is not None:
                    timings.append(gpu_row(width, height, frames, len(tiles), tile, MEASURED, peak))
                    MEASURED.clear()
                    MEASURED.update(unet_measured)
    print("TFLOP (1e12 floating-point operations; a multiply-add is 2).")
    if MEASURED is not None:
        print("\n| size (W x H) | frames | UNet tile fwd s | TFLOP/s | of peak | 1 step s | sampling job s | decode s (fp32) "
              "| face opt. face_crop s | face opt. full s | face_crop / sampling | full / sampling | peak GiB: tile, decode, face_crop, full |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(timings))
        return
    face_table(c, fake_mode, args.frames)
    # The CPU timing in docs/face_optimization.md: 512x512, 4 frames, box (192, 64, 320, 192), chunks of 1 frame.
    with fake_mode:
        crop, full = (face_evaluation(c, 4, 512, 512, mode, boxes=[(192, 64, 320, 192)] * 4, chunk_size=1)[0] for mode in ("face_crop", "full"))
    print(f"docs/face_optimization.md's CPU case (512x512, 4 frames, box (192, 64, 320, 192), chunks of 1): "
          f"full {full / T:.1f}, face_crop {crop / T:.2f} TFLOP per iteration: FLOP ratio {full / crop:.1f}x")


if __name__ == "__main__":
    main()
