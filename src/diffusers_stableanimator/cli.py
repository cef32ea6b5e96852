"""The `stableanimator` command.

Each subcommand lives in the module that implements it; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand is built or run; such a module keeps heavy imports (torch, cv2, onnxruntime) inside
its functions, so `stableanimator --help` stays fast and optional extras stay optional.

`run` raises for bad input (`StableAnimatorError`, or an `OSError`/`ValueError` that names the file);
`main` prints every error as one line and never a traceback (exit 2; 1 for an unexpected error; 130 when
interrupted by Ctrl-C or SIGTERM, which unwind alike so that no partial output is left).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from .errors import StableAnimatorError

# name -> (module, one-line help)
SUBCOMMANDS = {
    "smoke": ("diffusers_stableanimator.testing", "animate a puppet with the shipped tiny model on CPU to check an install"),
    "convert": ("diffusers_stableanimator.conversion", "official .pth checkpoints -> diffusers pipeline folder"),
    "animate": ("diffusers_stableanimator.animate", "reference photo + driving video (or pose folder) -> mp4"),
    "animate-batch": ("diffusers_stableanimator.animate_batch", "many animate jobs from a .jsonl file, spread over GPUs with accelerate"),
    "prepare-dataset": ("diffusers_stableanimator.training.prepare_dataset", "raw videos -> training folders (frames, poses, face masks, face embedding)"),
    "evaluate": ("diffusers_stableanimator.evaluation.command", "generated vs real videos -> L1, PSNR, PSNR*, SSIM, LPIPS, CSIM, FVD (JSON + table; --compare)"),
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


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C, so every staged output is removed on the way out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = f"stableanimator {args.command}"
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        module = importlib.import_module(args._module)
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; unfinished outputs were not written.", file=sys.stderr)
        return 130
    except (StableAnimatorError, OSError, ValueError, ImportError) as error:
        print(f"{prefix}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug or an unsupported setup: still one line, the traceback on request
        if os.environ.get("STABLEANIMATOR_TRACEBACK"):
            raise
        print(f"{prefix}: unexpected error: {type(error).__name__}: {_one_line(error)} "
              "(set STABLEANIMATOR_TRACEBACK=1 to see where, and please report it)", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, StableAnimatorError) or "\n" not in text:
        return text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:4]) + (" ..." if len(lines) > 4 else "")


if __name__ == "__main__":
    sys.exit(main())
