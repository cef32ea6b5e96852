#!/usr/bin/env python
"""Fine-tune StableAnimator (full, as the official script, or LoRA) with accelerate.

    accelerate launch examples/train_stableanimator.py --pretrained-model path/to/stableanimator-pipeline \\
        --train-data videos.txt --output-dir out --mixed-precision fp16 --gradient-checkpointing

One GPU, several GPUs, DeepSpeed or FSDP all come from your `accelerate config`. See docs/training.md for the data
layout, the LoRA recipe for a 24 GB GPU and what differs from the official train.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed

from diffusers_stableanimator import StableAnimatorPipeline
from diffusers_stableanimator.lora import FACE_ENCODER_FOLDER, ID_ADAPTER_WEIGHT_NAME, POSE_NET_FOLDER
from diffusers_stableanimator.training import StableAnimatorVideoDataset, configure_trainable, training_loss

logger = get_logger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--pretrained-model", required=True, help="StableAnimator pipeline folder or Hub id (e.g. from `stableanimator convert`)")
    g.add_argument("--train-data", required=True, help="text file listing video folders, or a folder of video folders")
    g.add_argument("--output-dir", required=True)
    g.add_argument("--width", type=int, default=512)
    g.add_argument("--height", type=int, default=512)
    g.add_argument("--num-frames", type=int, default=16)
    g.add_argument("--frame-rate", type=int, default=4, help="stride between sampled frames (reference: 4)")
    g.add_argument("--num-workers", type=int, default=4)
    g = p.add_argument_group("objective")
    g.add_argument("--conditioning-dropout-prob", type=float, default=0.1,
                   help="q: CLIP token dropped for p < 2q, reference latents for q <= p < 3q (one p ~ U(0,1) per sample)")
    g.add_argument("--drop-face-and-pose-with-clip", action="store_true",
                   help="also drop face tokens and pose when the CLIP token is dropped, as inference CFG does "
                        "(default off: the reference never drops them, and the released weights were trained so)")
    g = p.add_argument_group("what trains")
    g.add_argument("--lora-rank", type=int, default=0, help="0: full fine-tuning (reference); >0: LoRA of this rank on the UNet attentions")
    g.add_argument("--train-id-adapter", action="store_true", help="LoRA mode: also train the ID-Adapter (id_to_k/id_to_v) in full")
    g.add_argument("--train-pose-net", action="store_true", help="LoRA mode: also train PoseNet")
    g.add_argument("--train-face-encoder", action="store_true", help="LoRA mode: also train the FaceEncoder")
    g = p.add_argument_group("optimisation")
    g.add_argument("--learning-rate", type=float, default=1e-5)
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.999)
    g.add_argument("--adam-weight-decay", type=float, default=1e-2)
    g.add_argument("--adam-epsilon", type=float, default=1e-8)
    g.add_argument("--use-8bit-adam", action="store_true", help="bitsandbytes AdamW8bit (pip install bitsandbytes)")
    g.add_argument("--max-grad-norm", type=float, default=0.0, help="gradient clipping (0: off, as the reference)")
    g.add_argument("--lr-scheduler", default="constant", help="a diffusers.optimization scheduler name")
    g.add_argument("--lr-warmup-steps", type=int, default=0)
    g.add_argument("--train-batch-size", type=int, default=1, help="per device")
    g.add_argument("--gradient-accumulation-steps", type=int, default=1)
    g.add_argument("--max-train-steps", type=int, default=10000)
    g.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None, help="default: your accelerate config")
    g.add_argument("--gradient-checkpointing", nargs="?", const="blocks", choices=["blocks", "layers"], default=None,
                   help="`blocks` (the value when none is given): every UNet block is recomputed in the backward pass, its "
                        "temporal layers included, which is what fits LoRA at 512x512x16 in 24 GB; `layers`: only the layers "
                        "diffusers checkpoints (no temporal ones), faster but about twice the activation memory")
    g.add_argument("--use-ema", action="store_true", help="keep an EMA of the trained parameters and save it")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--overfit-one-batch", action="store_true",
                   help="debugging: reuse the first batch with the same noise, sigma and dropout every step")
    g = p.add_argument_group("checkpoints, validation, logging")
    g.add_argument("--checkpointing-steps", type=int, default=2000)
    g.add_argument("--checkpoints-total-limit", type=int, default=None)
    g.add_argument("--resume-from-checkpoint", default=None, help="a checkpoint folder, or `latest`")
    g.add_argument("--validation-steps", type=int, default=500, help="0: no validation")
    g.add_argument("--validation-frames", type=int, default=8)
    g.add_argument("--validation-inference-steps", type=int, default=25)
    g.add_argument("--report-to", default="auto", choices=["auto", "tensorboard", "wandb", "none"],
                   help="auto: tensorboard or wandb, whichever is installed")
    args = p.parse_args(argv)
    if args.lora_rank < 0:
        p.error(f"--lora-rank must be 0 (full fine-tuning) or positive, got {args.lora_rank}.")
    if args.lora_rank == 0 and (args.train_id_adapter or args.train_pose_net or args.train_face_encoder):
        p.error("--train-id-adapter/--train-pose-net/--train-face-encoder are LoRA options; full fine-tuning trains them all.")
    if not 0.0 <= args.conditioning_dropout_prob <= 1 / 3:
        p.error(f"--conditioning-dropout-prob must be in [0, 1/3] (it is used up to 3q), got {args.conditioning_dropout_prob}.")
    return args


# ---------------------------------------------------------------------------------------------- checkpoints
def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """`(step, path)` of `checkpoint-<int>` folders, sorted by step; other names (e.g. checkpoint-last) are ignored."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume(resume: str | None, output_dir: str) -> tuple[Path | None, int]:
    if resume is None:
        return None, 0
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.warning(f"--resume-from-checkpoint latest: no checkpoint-<step> folder in {output_dir}; starting from scratch.")
            return None, 0
        return checkpoints[-1][1], checkpoints[-1][0]
    path = Path(resume)
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    if not path.is_dir() or match is None:
        raise SystemExit(f"--resume-from-checkpoint {resume}: expected an existing `checkpoint-<step>` folder or `latest`.")
    return path, int(match.group(1))


def prune_checkpoints(output_dir: str, keep: int | None) -> None:
    """Remove the oldest checkpoints so that at most `keep - 1` remain before a new one is written."""
    if not keep:
        return
    checkpoints = list_checkpoints(output_dir)
    for _, path in checkpoints[: max(0, len(checkpoints) - keep + 1)]:
        shutil.rmtree(path)


# ---------------------------------------------------------------------------------------------- helpers
def make_optimizer(args, params):
    if args.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise SystemExit("--use-8bit-adam needs bitsandbytes: `pip install bitsandbytes` (CUDA only), or drop the flag.") from error
        optimizer_class = bnb.optim.AdamW8bit
    else:
        optimizer_class = torch.optim.AdamW
    return optimizer_class(params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                           weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)


def pick_tracker(report_to: str) -> str | None:
    import importlib.util

    installed = [name for name in ("tensorboard", "wandb") if importlib.util.find_spec(name) is not None]
    if report_to == "none":
        return None
    if report_to == "auto":
        if not installed:
            logger.warning("Neither tensorboard nor wandb is installed: losses and validation videos are not logged "
                           "(validation GIFs are still written to <output-dir>/validation). `pip install tensorboard` to log.")
        return installed[0] if installed else None
    if report_to not in installed:
        raise SystemExit(f"--report-to {report_to}: the package is not installed; `pip install {report_to}` or use --report-to none.")
    return report_to


def collate(items: list[dict]) -> dict:
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def run_validation(args, accelerator, pipe, modules, sample, step, tracker) -> None:
    """Render a few frames of the first training video with the current weights; write a GIF and log it."""
    from diffusers.utils import export_to_gif
    from PIL import Image

    unet, pose_net, face_encoder = (accelerator.unwrap_model(m) for m in modules)
    pipe.unet, pipe.pose_net, pipe.face_encoder = unet, pose_net, face_encoder
    to_pil = lambda t: Image.fromarray(((t.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy())
    num_frames = min(args.validation_frames, sample["pose_pixels"].shape[0])
    was_training = [m.training for m in (unet, pose_net, face_encoder)]
    for m in (unet, pose_net, face_encoder):
        m.eval()
    with torch.no_grad(), accelerator.autocast():
        frames = pipe(
            to_pil(sample["reference_image"]), [to_pil(p) for p in sample["pose_pixels"][:num_frames]],
            face_embeds=sample["face_embeds"], height=args.height, width=args.width,
            num_inference_steps=args.validation_inference_steps, tile_size=max(2, num_frames), tile_overlap=1,
            generator=torch.Generator().manual_seed(args.seed or 0), output_type="np",
        ).frames[0]
    for m, flag in zip((unet, pose_net, face_encoder), was_training):
        m.train(flag)
    os.makedirs(os.path.join(args.output_dir, "validation"), exist_ok=True)
    export_to_gif([Image.fromarray((f * 255).round().astype("uint8")) for f in frames], os.path.join(args.output_dir, "validation", f"step_{step}.gif"))
    if tracker == "tensorboard":
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]  # (1, F, 3, H, W) in [0, 1]
        accelerator.get_tracker("tensorboard").writer.add_video("validation", video, step, fps=7)
    elif tracker == "wandb":
        import wandb

        video = (torch.from_numpy(frames).permute(0, 3, 1, 2) * 255).byte().numpy()
        accelerator.get_tracker("wandb").tracker.log({"validation": wandb.Video(video, fps=7)}, step=step)


def save_output(args, accelerator, pipe, unet, pose_net, face_encoder) -> None:
    """Full mode: a pipeline folder. LoRA mode: the LoRA file plus whatever else trained in full."""
    os.makedirs(args.output_dir, exist_ok=True)
    if args.lora_rank == 0:
        pipe.unet, pipe.pose_net, pipe.face_encoder = unet, pose_net, face_encoder
        pipe.save_pretrained(args.output_dir)
        return
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    lora_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableAnimatorPipeline.save_lora_weights(args.output_dir, unet_lora_layers=lora_layers)
    if args.train_id_adapter:
        id_adapter = {n: p.detach().contiguous().cpu() for n, p in unet.named_parameters() if ".processor.id_to_" in n}
        save_file(id_adapter, os.path.join(args.output_dir, ID_ADAPTER_WEIGHT_NAME))
    if args.train_pose_net:
        pose_net.save_pretrained(os.path.join(args.output_dir, POSE_NET_FOLDER))
    if args.train_face_encoder:
        face_encoder.save_pretrained(os.path.join(args.output_dir, FACE_ENCODER_FOLDER))


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """Train; returns `{"first_step", "global_step", "losses"}` (used by the tests)."""
    args = parse_args(argv)
    PartialState()  # accelerate's logger needs the distributed state before the Accelerator exists
    tracker = pick_tracker(args.report_to)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=tracker,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.seed is not None:
        set_seed(args.seed)

    # 1. Components: frozen VAE / CLIP in the mixed-precision dtype, trained modules in float32.
    pipe = StableAnimatorPipeline.from_pretrained(args.pretrained_model)
    pipe.check_components()  # a mix of checkpoints fails here, in one line, not in the first forward pass
    pipe.set_progress_bar_config(disable=True)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    vae, image_encoder, unet, pose_net, face_encoder = pipe.vae, pipe.image_encoder, pipe.unet, pipe.pose_net, pipe.face_encoder
    vae.requires_grad_(False).to(accelerator.device, weight_dtype)
    image_encoder.requires_grad_(False).to(accelerator.device, weight_dtype)
    if pipe.face_recognizer is not None:
        pipe.face_recognizer.requires_grad_(False)
    # LoRA: the frozen base weights in the low-precision dtype too (half the memory); what trains stays float32.
    base_dtype = weight_dtype if args.lora_rank > 0 else torch.float32
    for module in (unet, pose_net, face_encoder):
        module.to(accelerator.device, base_dtype)
    params = configure_trainable(unet, pose_net, face_encoder, args.lora_rank, args.train_id_adapter, args.train_pose_net, args.train_face_encoder)
    for param in params:
        param.data = param.data.float()
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if args.gradient_checkpointing == "blocks":
        unet.enable_block_checkpointing()
    unet.train(), pose_net.train(), face_encoder.train()
    logger.info(f"{'LoRA rank ' + str(args.lora_rank) if args.lora_rank else 'full'} fine-tuning: "
                f"{sum(p.numel() for p in params) / 1e6:.1f} M trainable parameters")

    ema = None
    if args.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    # 2. Data, optimiser, schedule
    dataset = StableAnimatorVideoDataset(args.train_data, args.width, args.height, args.num_frames, args.frame_rate, seed=args.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.train_batch_size, shuffle=True, collate_fn=collate,
                                         num_workers=args.num_workers, drop_last=True)
    optimizer = make_optimizer(args, params)
    from diffusers.optimization import get_scheduler

    scheduler_name = args.lr_scheduler
    if scheduler_name == "constant" and args.lr_warmup_steps > 0:
        scheduler_name = "constant_with_warmup"  # the reference's `constant` silently ignored the warmup
    lr_scheduler = get_scheduler(scheduler_name, optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    unet, pose_net, face_encoder, optimizer, loader, lr_scheduler = accelerator.prepare(unet, pose_net, face_encoder, optimizer, loader, lr_scheduler)
    modules = (unet, pose_net, face_encoder)

    if accelerator.is_main_process:
        accelerator.init_trackers("stableanimator", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})

    # 3. Resume
    resume_path, global_step = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    if resume_path is not None:
        logger.info(f"Resuming from {resume_path} (step {global_step})")
        accelerator.load_state(str(resume_path))
    first_step = global_step
    validation_sample = dataset[0] if args.validation_steps > 0 else None

    # 4. Train
    losses = []
    generator = None
    fixed_batch = None
    steps_per_epoch = max(1, len(loader) // args.gradient_accumulation_steps)
    skip_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps
    while global_step < args.max_train_steps:
        epoch_loader = accelerator.skip_first_batches(loader, skip_batches) if skip_batches else loader
        skip_batches = 0
        for batch in epoch_loader:
            if args.overfit_one_batch:
                fixed_batch = fixed_batch if fixed_batch is not None else batch
                batch = fixed_batch
                generator = torch.Generator().manual_seed(args.seed or 0)  # same noise, sigma and dropout each step
            with accelerator.accumulate(*modules), accelerator.autocast():
                loss = training_loss(batch, vae, image_encoder, pipe.feature_extractor, unet, pose_net, face_encoder,
                                     args.conditioning_dropout_prob, args.drop_face_and_pose_with_clip, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(params)
            step_loss = accelerator.gather(loss.detach()[None]).mean().item()
            losses.append(step_loss)
            accelerator.log({"loss": step_loss, "lr": lr_scheduler.get_last_lr()[0]}, step=global_step)
            if global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps:
                if accelerator.is_main_process:
                    prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
                accelerator.wait_for_everyone()
                accelerator.save_state(os.path.join(args.output_dir, f"checkpoint-{global_step}"))
            if validation_sample is not None and global_step % args.validation_steps == 0 and accelerator.is_main_process:
                run_validation(args, accelerator, pipe, modules, validation_sample, global_step, tracker)
            if global_step >= args.max_train_steps:
                break

    # 5. Save the result
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unet, pose_net, face_encoder = (accelerator.unwrap_model(m) for m in modules)
        if ema is not None:
            ema.copy_to(params)
        save_output(args, accelerator, pipe, unet, pose_net, face_encoder)
        logger.info(f"Saved the {'LoRA' if args.lora_rank else 'pipeline'} to {args.output_dir}")
    accelerator.end_training()
    return {"first_step": first_step, "global_step": global_step, "losses": losses}


if __name__ == "__main__":
    main(sys.argv[1:])
