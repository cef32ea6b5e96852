"""FLOPs of the full-size pipeline's stages, counted on fake tensors (no GPU, no weights, no download).

    python benchmarks/flop_counts.py                  # 16 and 64 frames at 512x512 and 576x1024 (W x H)
    python benchmarks/flop_counts.py --frames 16 --sizes 512x512

The full-size architecture (SVD-xt UNet with the ID-Adapter, SVD VAE, CLIP ViT-H/14 vision tower, PoseNet,
FaceEncoder, ArcFace iresnet100) is built on the meta device and run on fake tensors (`FakeTensorMode`: shapes
only) under `torch.utils.flop_counter.FlopCounterMode`, which counts matrix multiplies, convolutions (forward and
backward) and attention: 2 FLOPs per multiply-add, elementwise work not counted. Figures per preset:

* one UNet forward on one 16-frame tile, both guidance branches batched (and the two branches run one at a time,
  as the official pipeline does: same FLOPs, batching saves kernel launches only);
* one denoising step (every tile of the video) and the whole sampling job (25 steps, plus the reference's CLIP
  and VAE encodings, PoseNet on every frame and the face encoder);
* the VAE decode of every frame;
* face optimisation ("HJB", 3 Adam iterations in each of 21 of the 25 steps, decode chunks of 4 frames, a
  square face box a quarter of the frame wide in every frame, gradient checkpointing on as by default: each
  evaluation is a decoder forward, its recomputation and its backward, and ArcFace forward and backward), in
  both decode modes, and its ratio to sampling.

Attention on CPU fake tensors dispatches to `_scaled_dot_product_flash_attention_for_cpu`, which torch's counter
does not know; it is registered here with torch's own attention formula.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).parent))
from simulated_memory import to_fake  # noqa: E402

STEPS, FACE_STEPS, FACE_ITERATIONS, FACE_CHUNK = 25, 21, 3, 4
TILE_SIZE, TILE_OVERLAP = 16, 4

try:
    @register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
    def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)
except (AttributeError, RuntimeError):  # an older torch without this kernel, or one that already counts it
    pass


def build(fake_mode):
    """The full-size models on fake tensors: UNet, CLIP, PoseNet, FaceEncoder in fp16; VAE and ArcFace in fp32
    (face optimisation runs them in float32)."""
    from diffusers_stableanimator.models import ArcFaceIResNet
    from diffusers_stableanimator.testing import full_size_random_components

    components = full_size_random_components(device="meta")
    with torch.device("meta"):
        components["face_recognizer"] = ArcFaceIResNet().eval()
    for name in ("unet", "image_encoder", "pose_net", "face_encoder", "vae", "face_recognizer"):
        module = components[name]
        module.to(torch.float16) if name in ("unet", "image_encoder", "pose_net", "face_encoder") else None
        to_fake(module.eval(), fake_mode)
    return components


def count(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def unet_tile_flops(unet, frames: int, h: int, w: int, batch: int) -> int:
    dim = unet.config.cross_attention_dim
    x = torch.zeros(batch, frames, 8, h, w, dtype=torch.float16)
    context = torch.zeros(batch, 1 + unet.config.num_face_tokens, dim, dtype=torch.float16)
    pose = torch.zeros(batch * frames, unet.config.block_out_channels[0], h, w, dtype=torch.float16)
    ids = torch.zeros(batch, 3, dtype=torch.float16)
    with torch.no_grad():
        return count(lambda: unet(x, torch.tensor(1.0), encoder_hidden_states=context, added_time_ids=ids, pose_latents=pose, return_dict=False))


def encoders_flops(c, frames: int, height: int, width: int) -> int:
    with torch.no_grad():
        clip = count(lambda: c["image_encoder"](torch.zeros(1, 3, 224, 224, dtype=torch.float16)))
        vae = count(lambda: c["vae"].encode(torch.zeros(1, 3, height, width)))
        pose = count(lambda: c["pose_net"](torch.zeros(frames, 3, height, width, dtype=torch.float16)))
        face = count(lambda: c["face_encoder"](torch.zeros(1, 512, dtype=torch.float16), torch.zeros(1, 1, 1024, dtype=torch.float16)))
    return clip + vae + pose + face


def decode_flops(vae, frames: int, h: int, w: int, chunk: int = 8) -> int:
    with torch.no_grad():
        return sum(count(lambda n=n: vae.decode(torch.zeros(n, 4, h, w), num_frames=n)) for n in _chunks(frames, chunk))


def _chunks(frames: int, chunk: int) -> list[int]:
    return [min(chunk, frames - start) for start in range(0, frames, chunk)]


def face_evaluation_flops(c, frames: int, height: int, width: int, mode: str, box=None, chunk: int = FACE_CHUNK) -> int:
    """One evaluation of the face objective and its gradient (what each Adam iteration costs)."""
    from diffusers_stableanimator.face_optimization import FaceObjective, FaceOptimizationConfig

    if box is None:  # a square face box a quarter of the frame wide, centred, in the upper third
        side = width // 4
        box = (width // 2 - side // 2, height // 6, width // 2 + side // 2, height // 6 + side)
    objective = FaceObjective(c["vae"], c["face_recognizer"], torch.zeros(1, 512), [box] * frames,
                              FaceOptimizationConfig(mode=mode), decode_chunk_size=chunk)
    x0 = torch.zeros(1, frames, 4, height // 8, width // 8, requires_grad=True)
    with objective.prepared(), torch.enable_grad():
        return count(lambda: objective(x0).backward())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--sizes", nargs="+", default=["512x512", "576x1024"], help="W x H")
    args = parser.parse_args()
    from diffusers_stableanimator.tiling import temporal_tiles

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    c = build(fake_mode)
    T = 1e12
    print("| size (W x H) | frames | tiles | UNet tile fwd, CFG batched | same, branches apart | 1 step | sampling job (25 steps + encoders) "
          "| decode | face opt. face_crop | face opt. full | face_crop / sampling | full / sampling | full / face_crop |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        width, height = map(int, size.split("x"))
        h, w = height // 8, width // 8
        with fake_mode:
            tile = unet_tile_flops(c["unet"], TILE_SIZE, h, w, batch=2)
            apart = 2 * unet_tile_flops(c["unet"], TILE_SIZE, h, w, batch=1)
            for frames in args.frames:
                tiles = temporal_tiles(frames, TILE_SIZE, TILE_OVERLAP)
                step = tile * len(tiles) if frames >= TILE_SIZE else unet_tile_flops(c["unet"], frames, h, w, batch=2)
                sampling = STEPS * step + encoders_flops(c, frames, height, width)
                decode = decode_flops(c["vae"], frames, h, w)
                face = {mode: FACE_STEPS * FACE_ITERATIONS * face_evaluation_flops(c, frames, height, width, mode) for mode in ("face_crop", "full")}
                print(f"| {width}x{height} | {frames} | {len(tiles)} | {tile / T:.1f} | {apart / T:.1f} ({apart / tile - 1:+.3%}) | {step / T:.0f} "
                      f"| {sampling / T:.0f} | {decode / T:.1f} | {face['face_crop'] / T:.0f} | {face['full'] / T:.0f} "
                      f"| {face['face_crop'] / sampling:.2f} | {face['full'] / sampling:.2f} | {face['full'] / face['face_crop']:.1f}x |", flush=True)
    print("TFLOP (1e12 floating-point operations; a multiply-add is 2).")
    # The CPU timing in docs/face_optimization.md: 512x512, 4 frames, box (192, 64, 320, 192), chunks of 1 frame.
    with fake_mode:
        crop, full = (face_evaluation_flops(c, 4, 512, 512, mode, box=(192, 64, 320, 192), chunk=1) for mode in ("face_crop", "full"))
    print(f"docs/face_optimization.md's CPU case (512x512, 4 frames, box (192, 64, 320, 192), chunks of 1): "
          f"full {full / T:.1f}, face_crop {crop / T:.2f} TFLOP per iteration: FLOP ratio {full / crop:.1f}x")


if __name__ == "__main__":
    main()
