"""The `stableanimator` command.

Each subcommand lives in the module that implements it; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand is built or run; such a module keeps heavy imports (torch, cv2, onnxruntime) inside
its functions, so `stableanimator --help` stays fast and optional extras stay optional.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    "smoke": ("diffusers_stableanimator.testing", "run the tiny random pipeline on CPU to check an install"),
    "convert": ("diffusers_stableanimator.conversion", "official .pth checkpoints -> diffusers pipeline folder"),
    "animate": ("diffusers_stableanimator.animate", "reference photo + driving video (or pose folder) -> mp4"),
    "animate-batch": ("diffusers_stableanimator.animate_batch", "many animate jobs from a .jsonl file, spread over GPUs with accelerate"),
    "prepare-dataset": ("diffusers_stableanimator.training.prepare_dataset", "raw videos -> training folders (frames, poses, face masks, face embedding)"),
    "extract-poses": ("diffusers_stableanimator.preprocessing.extract", "driving video + reference photo -> aligned pose frames, keypoints, face boxes"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stableanimator", description="StableAnimator for diffusers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        # Argument definitions are cheap; import the module lazily only to add them.
        importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
