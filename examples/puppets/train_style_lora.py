#!/usr/bin/env python
"""Fine-tune a LoRA of the tiny puppet model on a puppet style it never saw (issue 14), on CPU in a few minutes.

    python examples/puppets/train_style_lora.py --output-dir runs/thick-pastel-lora --threads 1 [--base FOLDER] [--ship]

The style is `puppets.THICK_PASTEL` (arms and legs twice as thick, body parts pale), drawn in every frame of a video,
reference and targets alike, as in a user's own footage. Into `--output-dir`:
1. `data/`: a styled puppet dataset (`write_dataset(style=THICK_PASTEL)`, its own seed stream, `--seed`, away from the
   held-out evaluation seeds) whose `face_embedding.npy` is the base pipeline's `face_recognizer` on each video's
   first face;
2. `lora/`: examples/train_stableanimator.py `--lora-rank` from `--base` (UNet attention LoRA only), which writes
   `pytorch_lora_weights.safetensors` (`pipe.load_lora_weights(folder)` loads it);
3. `report.json`: seconds per stage and the losses.

`--ship` stores the LoRA in the package (`tiny_puppet.THICK_PASTEL_LORA`). examples/puppets/evaluate_style_lora.py
measures it on held-out styled puppets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # train_tiny.py beside this file, also when loaded by path (the tests)
    sys.path.insert(0, str(HERE))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", required=True, help="run folder (must be new or empty)")
    p.add_argument("--base", default=None, help="the pipeline folder to fine-tune (default: the shipped tiny-puppet weights)")
    p.add_argument("--videos", type=int, default=40, help="styled videos to train on")
    p.add_argument("--frames", type=int, default=16, help="frames per video")
    p.add_argument("--num-frames", type=int, default=8, help="frames per training clip")
    p.add_argument("--steps", type=int, default=800, help="LoRA training steps")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--learning-rate", type=float, default=5e-3,
                   help="high for a LoRA: 1e-3 at rank 4 left the output within the seed noise in 800 steps")
    p.add_argument("--seed", type=int, default=1, help="dataset and training seed (the base was trained on seed 0's puppets)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--ship", action="store_true", help="store the LoRA in the package (weights/tiny-puppet-thick-pastel-lora/)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from train_tiny import with_threads

    args = parse_args(argv)
    return with_threads(args.threads, run, args)


def run(args: argparse.Namespace) -> dict:
    import torch
    from train_tiny import load_train_script

    from diffusers_stableanimator import StableAnimatorPipeline
    from diffusers_stableanimator.errors import StableAnimatorError
    from diffusers_stableanimator.outputs import atomic_file, check_new_or_empty
    from diffusers_stableanimator.puppet_recognizer import reference_face_embedder
    from diffusers_stableanimator.puppets import THICK_PASTEL, write_dataset
    from diffusers_stableanimator.tiny_puppet import SIZE, WEIGHTS

    out = Path(args.output_dir)
    check_new_or_empty(out, "--output-dir")  # never write over someone's files
    base = Path(args.base) if args.base else WEIGHTS
    if not (base / "model_index.json").is_file():
        raise StableAnimatorError(f"--base {base} is not a pipeline folder (no model_index.json); give a tiny-puppet pipeline folder.")
    started = time.time()
    report = {"args": vars(args), "base": str(base), "style": vars(THICK_PASTEL)}

    # 1. Styled data, embedded by the base pipeline's own recognizer (the one it was trained with)
    t = time.time()
    recognizer = StableAnimatorPipeline.from_pretrained(str(base), dtype=torch.float32).face_recognizer
    if recognizer is None:
        raise StableAnimatorError(f"--base {base} has no face_recognizer; train it with examples/puppets/train_tiny.py.")
    write_dataset(out / "data", args.videos, seed=args.seed, num_frames=args.frames, width=SIZE, height=SIZE,
                  face_embedder=reference_face_embedder(recognizer), style=THICK_PASTEL)
    report["data_seconds"] = round(time.time() - t, 1)

    # 2. The LoRA, with the package's training script
    t = time.time()
    result = load_train_script().main([
        "--pretrained-model", str(base), "--train-data", str(out / "data" / "videos.txt"), "--output-dir", str(out / "lora"),
        "--lora-rank", str(args.rank), "--width", str(SIZE), "--height", str(SIZE), "--num-frames", str(args.num_frames),
        "--frame-rate", "1", "--num-workers", "0", "--train-batch-size", "1", "--max-train-steps", str(args.steps),
        "--learning-rate", str(args.learning_rate), "--seed", str(args.seed), "--report-to", "none",
        "--validation-steps", "0", "--checkpointing-steps", str(args.steps), "--checkpoints-total-limit", "1", "--mixed-precision", "no",
    ])
    losses = result["losses"]
    report.update({"lora_steps": result["global_step"], "lora_seconds": round(time.time() - t, 1),
                   "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                   "loss_mean_last_100": sum(losses[-100:]) / len(losses[-100:]) if losses else None,
                   "total_seconds": round(time.time() - started, 1)})
    atomic_file(out / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    if args.ship:
        from diffusers_stableanimator.tiny_puppet import THICK_PASTEL_LORA, ship_lora

        ship_lora(out / "lora")
        print(f"shipped the LoRA to {THICK_PASTEL_LORA}")
    print(json.dumps({k: v for k, v in report.items() if k != "args"}))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
