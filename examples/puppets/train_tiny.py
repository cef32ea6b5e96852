#!/usr/bin/env python
"""Train a tiny StableAnimator on synthetic puppets, on CPU, with the package's own training code (issue 14).

    python examples/puppets/train_tiny.py --output-dir runs/tiny-puppet --videos 200 --vae-steps 2000 --unet-steps 3000 --threads 1

Stages, each writing into `--output-dir`:
0. a puppet face recognizer (`diffusers_stableanimator.puppet_recognizer.train_recognizer`, CosFace over puppets
   of its own seed stream), which becomes the pipeline's `face_recognizer`;
1. `data/`: a puppet dataset (`diffusers_stableanimator.puppets.write_dataset`) whose `face_embedding.npy` is the
   recognizer's embedding of the face in each video's first frame, unless `--data` names one;
2. `base/`: a tiny pipeline whose temporal VAE is trained here to reconstruct puppet clips (MSE + a small KL
   term; its `scaling_factor` is then set to 1 / the std of the latents); UNet, PoseNet and FaceEncoder are
   freshly initialised at toy sizes; the CLIP image encoder is tiny and random and stays frozen;
3. `pipeline/`: examples/train_stableanimator.py (full training of UNet, PoseNet, FaceEncoder and ID-Adapter)
   run from `base/` on the dataset, keeping an EMA of the weights (`--use-ema`), which it saves.

`report.json` records each stage's seconds, the losses, the recognizer's held-out figures and the peak memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", required=True, help="run folder (must be new or empty)")
    p.add_argument("--data", help="an existing puppet dataset (videos.txt or its folder); default: write one")
    p.add_argument("--videos", type=int, default=200, help="videos to generate when --data is not given")
    p.add_argument("--frames", type=int, default=16, help="frames per generated video")
    p.add_argument("--num-frames", type=int, default=8, help="frames per training clip")
    p.add_argument("--frame-rate", type=int, default=1, help="stride between a clip's frames")
    p.add_argument("--recognizer-steps", type=int, default=200)
    p.add_argument("--recognizer-identities", type=int, default=200)
    p.add_argument("--recognizer-held-out", type=int, default=50, help="unseen puppets the recognizer is measured on")
    p.add_argument("--vae-steps", type=int, default=6000)
    p.add_argument("--vae-num-frames", type=int, default=2,
                   help="frames per VAE training clip (default 2: a step costs about its frames, and the VAE needs many steps more than long clips)")
    p.add_argument("--vae-learning-rate", type=float, default=1e-3)
    p.add_argument("--vae-kl-weight", type=float, default=1e-6)
    p.add_argument("--unet-steps", type=int, default=6000)
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice); on CPUs shared with other work 1 can be many times faster")
    p.add_argument("--checkpointing-steps", type=int, default=1000)
    p.add_argument("--ship", action="store_true",
                   help="copy the trained pipeline into the package (src/diffusers_stableanimator/weights/, fp16) as tiny-puppet")
    return p.parse_args(argv)


def train_vae(vae, data, args) -> dict:
    """Reconstruction training of the temporal VAE on puppet clips; returns figures for the report."""
    import torch

    from diffusers_stableanimator.tiny_puppet import SIZE

    from diffusers_stableanimator.training import StableAnimatorVideoDataset

    dataset = StableAnimatorVideoDataset(data, SIZE, SIZE, args.vae_num_frames or args.num_frames, args.frame_rate, seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_learning_rate, weight_decay=0.0)
    # The learning rate falls linearly to 0 over the last 30% of the steps (a pilot: held-out L1 0.0046 after 1500 of
    # 3000 steps, 0.0039 at the end).
    decay = max(1, round(0.3 * args.vae_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (args.vae_steps - step) / decay))
    vae.train()
    losses = []
    for step in range(args.vae_steps):
        index = int(torch.randint(len(dataset), (1,), generator=generator))
        clip = dataset[index]["pixel_values"]  # (F, 3, H, W) in [-1, 1]
        posterior = vae.encode(clip).latent_dist
        latents = posterior.sample(generator)
        reconstruction = vae.decode(latents, num_frames=clip.shape[0]).sample
        mse = torch.nn.functional.mse_loss(reconstruction, clip)
        loss = mse + args.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(mse.item())
        if (step + 1) % 100 == 0:
            print(f"vae step {step + 1}/{args.vae_steps}: reconstruction MSE {sum(losses[-100:]) / 100:.4f}", flush=True)
    vae.eval()
    with torch.no_grad():  # SD's convention: scale latents to unit standard deviation
        latents = torch.cat([vae.encode(dataset[i]["pixel_values"]).latent_dist.mode() for i in range(min(len(dataset), 8))])
        std = float(latents.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    return {"vae_steps": args.vae_steps, "vae_mse_first": losses[0] if losses else None,
            "vae_mse_last": losses[-1] if losses else None, "latent_std": std}


def load_train_script():
    spec = importlib.util.spec_from_file_location("train_stableanimator", HERE.parent / "train_stableanimator.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("train_stableanimator", module)
    spec.loader.exec_module(module)
    return module


def with_threads(threads, run, args):
    """`run(args)` with `threads` torch CPU threads (None: torch's choice); in-process callers (the tests) get
    their setting back."""
    import torch

    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        return run(args)
    finally:
        torch.set_num_threads(before)


def main(argv=None) -> dict:
    args = parse_args(argv)
    return with_threads(args.threads, run, args)


def run(args: argparse.Namespace) -> dict:
    import resource

    import torch

    from diffusers_stableanimator import StableAnimatorPipeline
    from diffusers_stableanimator.outputs import StagedOutputs, atomic_file, check_new_or_empty
    from diffusers_stableanimator.puppet_recognizer import (evaluate_recognizer, held_out_identity_seeds,
                                                            reference_face_embedder, train_recognizer)
    from diffusers_stableanimator.puppets import write_dataset
    from diffusers_stableanimator.tiny_puppet import SIZE, untrained_components

    out = Path(args.output_dir)
    check_new_or_empty(out, "--output-dir")  # never write over someone's files
    started = time.time()
    report = {"args": vars(args)}

    # 0. The puppet face recognizer
    recognizer, figures = train_recognizer(args.seed, identities=args.recognizer_identities, steps=args.recognizer_steps)
    report.update(figures)
    report["recognizer_held_out"] = evaluate_recognizer(recognizer, held_out_identity_seeds(args.recognizer_held_out))
    print(f"recognizer on {args.recognizer_held_out} held-out puppets: {report['recognizer_held_out']}", flush=True)

    # 1. Data
    t = time.time()
    data = Path(args.data) if args.data else None
    if data is None:
        write_dataset(out / "data", args.videos, seed=args.seed, num_frames=args.frames, width=SIZE, height=SIZE,
                      face_embedder=reference_face_embedder(recognizer))
        data = out / "data" / "videos.txt"
    report["data_seconds"] = round(time.time() - t, 1)
    report["data"] = str(data)

    # 2. The base pipeline with a trained VAE and the recognizer
    components = untrained_components(args.seed)
    components["face_recognizer"] = recognizer
    t = time.time()
    report.update(train_vae(components["vae"], data, args))
    report["vae_seconds"] = round(time.time() - t, 1)
    with StagedOutputs() as staged:  # `base/` appears only once complete
        StableAnimatorPipeline(**components).save_pretrained(staged.folder(out / "base"))

    # 3. UNet, PoseNet, FaceEncoder and ID-Adapter with the package's training script
    t = time.time()
    result = load_train_script().main([
        "--pretrained-model", str(out / "base"), "--train-data", str(data), "--output-dir", str(out / "pipeline"),
        "--width", str(SIZE), "--height", str(SIZE), "--num-frames", str(args.num_frames),
        "--frame-rate", str(args.frame_rate), "--num-workers", "0", "--train-batch-size", str(args.batch_size),
        "--max-train-steps", str(args.unet_steps), "--learning-rate", str(args.learning_rate),
        "--seed", str(args.seed), "--report-to", "none", "--validation-steps", "0",
        "--checkpointing-steps", str(args.checkpointing_steps), "--checkpoints-total-limit", "1",
        # The saved weights are an EMA of the trained ones (diffusers' EMAModel: about the last 700 steps at 6000). A
        # pilot, 1000 more steps from an earlier model's 6000: PSNR* 17.64 -> 17.96, SSIM 0.656 -> 0.679 (docs/puppets.md).
        "--use-ema",
    ])
    losses = result["losses"]
    report.update({"unet_steps": result["global_step"], "unet_seconds": round(time.time() - t, 1),
                   "unet_loss_first": losses[0] if losses else None, "unet_loss_last": losses[-1] if losses else None,
                   "total_seconds": round(time.time() - started, 1),
                   "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                   "torch_threads": torch.get_num_threads()})
    atomic_file(out / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    if args.ship:
        from diffusers_stableanimator.tiny_puppet import WEIGHTS, ship

        ship(out / "pipeline")
        print(f"shipped the weights to {WEIGHTS}")
    print(json.dumps({k: v for k, v in report.items() if k != "args"}))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
