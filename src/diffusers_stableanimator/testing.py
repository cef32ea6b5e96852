"""A tiny StableAnimator pipeline with random weights, for tests, and the `stableanimator smoke` install check.

The tiny random pipeline has the real architecture at toy sizes (64x64 frames, 8x8 latents), runs on CPU in about
a second, and produces noise: it checks that everything runs, not that anything looks right.

`stableanimator smoke` runs the shipped trained puppet model (`tiny_puppet`) on a held-out puppet, so the first run
shows a real animation in seconds; `--model tiny-random` runs the random one.

    stableanimator smoke --frames 6 --out smoke.gif
"""

from __future__ import annotations

import argparse
import time

TINY_RANDOM = "tiny-random"
TINY_SIZE = 64  # frames are TINY_SIZE x TINY_SIZE
TINY_ID_DIM = 512  # the real ArcFace width, so real face embeddings fit the tiny model too


def svd_xt_scheduler():
    """HJBEulerScheduler with SVD-xt's scheduler config."""
    from .schedulers import HJBEulerScheduler

    return HJBEulerScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
    )


def tiny_random_components(seed: int = 0, with_face_recognizer: bool = True) -> dict:
    """Components of a tiny random StableAnimatorPipeline (dimensions chained from one another)."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from .models import ArcFaceIResNet, FaceEncoder, PoseNet, StableAnimatorUNetModel

    width = 32  # cross-attention / CLIP width
    torch.manual_seed(seed)
    unet = StableAnimatorUNetModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=width,
        num_attention_heads=(2, 4),
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24,
        num_frames=8,
    )
    # The random init leaves the ID-Adapter equal to to_k/to_v; perturb it so tests see a distinct branch.
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if ".processor.id_to_" in name:
                param.add_(0.1 * torch.randn_like(param))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        sample_size=TINY_SIZE,
    )
    torch.manual_seed(seed + 2)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32, projection_dim=width, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, intermediate_size=37, patch_size=4,
        )
    )
    feature_extractor = CLIPImageProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32})
    torch.manual_seed(seed + 3)
    pose_net = PoseNet(block_out_channels=(8, 8, 16, 16), out_channels=32)
    with torch.no_grad():  # the released PoseNet is trained; a zero projection would hide pose in tests
        pose_net.final_proj.weight.normal_(0.0, 0.05)
    torch.manual_seed(seed + 4)
    face_encoder = FaceEncoder(
        id_embeddings_dim=TINY_ID_DIM, clip_embeddings_dim=width, cross_attention_dim=width,
        num_tokens=4, depth=2, dim_head=8, heads=4, ff_mult=2,
    )
    with torch.no_grad():  # same reason: the zero-initialised output projection would make face tokens constant
        face_encoder.fusion_model.proj_out.weight.normal_(0.0, 0.2)
    scheduler = svd_xt_scheduler()
    face_recognizer = None
    if with_face_recognizer:
        torch.manual_seed(seed + 5)
        face_recognizer = ArcFaceIResNet(layers=(1, 1, 1, 1), block_out_channels=(8, 8, 16, 16), num_features=TINY_ID_DIM).eval()
    return {
        "vae": vae,
        "image_encoder": image_encoder,
        "feature_extractor": feature_extractor,
        "unet": unet,
        "pose_net": pose_net,
        "face_encoder": face_encoder,
        "scheduler": scheduler,
        "face_recognizer": face_recognizer,
    }


def full_size_random_components(device="cpu") -> dict:
    """Components of the full-size architecture (SVD-xt UNet + ID-Adapter, SVD VAE, CLIP ViT-H/14, PoseNet,
    FaceEncoder, scheduler) with random weights, built on the meta device and materialised on `device` (for
    benchmarks: speed and memory do not depend on the weights)."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from .models import FaceEncoder, PoseNet, StableAnimatorUNetModel

    with torch.device("meta"):
        unet = StableAnimatorUNetModel()
        vae = AutoencoderKLTemporalDecoder(
            down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2
        )
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
            patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu",
        ))
        pose_net, face_encoder = PoseNet(), FaceEncoder()
    modules = {"unet": unet, "vae": vae, "image_encoder": image_encoder, "pose_net": pose_net, "face_encoder": face_encoder}
    for name, module in modules.items():  # random weights, cheaply: small normals, unit norms
        module.to_empty(device=device)
        with torch.no_grad():
            for pname, p in module.named_parameters():
                p.normal_(0.0, 0.02) if p.ndim > 1 else (p.fill_(1.0) if "norm" in pname and pname.endswith("weight") else p.zero_())
        if name == "unet":
            with torch.device(device):  # ID-Adapter weights start as copies of to_k/to_v, made where these live
                module.set_stableanimator_attn_processors()
    embeddings = image_encoder.vision_model.embeddings  # a non-persistent buffer that to_empty left uninitialised
    embeddings.position_ids.copy_(torch.arange(embeddings.position_ids.shape[-1], device=device).expand(1, -1))
    modules["feature_extractor"] = CLIPImageProcessor(crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224})
    modules["scheduler"] = svd_xt_scheduler()
    return modules


def tiny_random_pipeline(seed: int = 0, with_face_recognizer: bool = True):
    """A tiny StableAnimatorPipeline with random weights (noise output). Frames are 64x64."""
    from .pipeline_stableanimator import StableAnimatorPipeline

    pipe = StableAnimatorPipeline(**tiny_random_components(seed, with_face_recognizer))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def synthetic_inputs(num_frames: int, size: int = TINY_SIZE, seed: int = 0):
    """A reference image, `num_frames` stick-figure pose frames (a waving arm) and a random face embedding."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    poses = []
    for i in range(num_frames):
        frame = Image.new("RGB", (size, size))
        draw = ImageDraw.Draw(frame)
        s = size / 64
        draw.line([(32 * s, 12 * s), (32 * s, 40 * s)], fill=(255, 0, 0), width=max(1, int(2 * s)))
        draw.line([(32 * s, 40 * s), (24 * s, 60 * s)], fill=(0, 255, 0), width=max(1, int(2 * s)))
        draw.line([(32 * s, 40 * s), (40 * s, 60 * s)], fill=(0, 0, 255), width=max(1, int(2 * s)))
        arm_y = (20 + 10 * np.sin(i / 2)) * s
        draw.line([(32 * s, 20 * s), (50 * s, arm_y)], fill=(255, 255, 0), width=max(1, int(2 * s)))
        poses.append(frame)
    face_embeds = torch.from_numpy(rng.standard_normal(TINY_ID_DIM).astype(np.float32)) * 20
    return image, poses, face_embeds


# ---------------------------------------------------------------------------------------------- `stableanimator smoke`
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .tiny_puppet import TINY_PUPPET

    parser.add_argument("--model", choices=[TINY_PUPPET, TINY_RANDOM], default=TINY_PUPPET,
                        help="tiny-puppet (default): the shipped model trained on synthetic puppets animates a held-out "
                             "puppet; tiny-random: random weights (noise), to check the plumbing only")
    parser.add_argument("--frames", type=int, default=6, help="number of frames to generate (default 6; at most 16 for tiny-puppet)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 10 for tiny-puppet, 2 for tiny-random)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="optional GIF path: tiny-puppet writes pose | generated | ground truth side by side")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    import torch

    from .outputs import check_replaceable_file, check_writable
    from .preprocessing.video_io import write_video

    steps = args.steps if args.steps is not None else (2 if args.model == TINY_RANDOM else 10)
    if args.frames < 1 or steps < 1:
        raise ValueError(f"--frames and --steps must be at least 1, got {args.frames} and {steps}.")
    if args.out:
        if not args.out.lower().endswith(".gif"):
            raise ValueError(f"--out must be a .gif path, got {args.out}.")
        check_writable(args.out, "--out")
        check_replaceable_file(args.out, "--out", args.overwrite)
    start = time.perf_counter()
    if args.model == TINY_RANDOM:
        print(f"Checking the install: {args.frames} frames, {steps} denoising steps of a tiny random model on the CPU.", flush=True)
        pipe = tiny_random_pipeline(seed=args.seed)
        pipe.set_progress_bar_config(disable=None)  # a progress bar on terminals
        image, poses, face_embeds = synthetic_inputs(args.frames, seed=args.seed)
        frames = pipe(
            image, poses, face_embeds=face_embeds, num_inference_steps=steps, tile_size=4, tile_overlap=1,
            generator=torch.Generator().manual_seed(args.seed),
        ).frames[0]
        print(f"tiny random StableAnimator pipeline (random weights, the frames are noise): "
              f"{len(frames)} frames of {frames[0].size[0]}x{frames[0].size[1]} in {time.perf_counter() - start:.1f}s")
        pictures = frames
    else:
        from .tiny_puppet import load_example, load_tiny_puppet

        print(f"Checking the install: the tiny puppet model (trained on synthetic puppets, shipped with the package) animates "
              f"a puppet it never saw along {args.frames} poses of a motion it never saw, {steps} denoising steps on the CPU.", flush=True)
        pipe = load_tiny_puppet()
        pipe.set_progress_bar_config(disable=None)
        example = load_example(args.frames)
        frames = pipe(
            example["reference"], example["poses"], face_embeds=example["face_embedding"], num_inference_steps=steps,
            tile_size=8, tile_overlap=2,  # trained on 8-frame clips
            generator=torch.Generator().manual_seed(args.seed),
        ).frames[0]
        print(f"tiny puppet StableAnimator pipeline: {len(frames)} frames of {frames[0].size[0]}x{frames[0].size[1]} in "
              f"{time.perf_counter() - start:.1f}s: a blurry puppet in roughly the reference's colours that walks with the "
              f"poses, less precisely than the ground truth (measured quality: docs/puppets.md)")
        pictures = [side_by_side([pose, frame, truth]) for pose, frame, truth in zip(example["poses"], frames, example["truth"])]
    if args.out:
        write_video(args.out, pictures, fps=7)
        print(f"wrote {args.out}")
    return 0


def side_by_side(pictures):
    """PIL images of one height, left to right."""
    from PIL import Image

    out = Image.new("RGB", (sum(p.size[0] for p in pictures), max(p.size[1] for p in pictures)))
    x = 0
    for picture in pictures:
        out.paste(picture.convert("RGB"), (x, 0))
        x += picture.size[0]
    return out
