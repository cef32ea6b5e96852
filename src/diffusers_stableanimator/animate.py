"""`stableanimator animate`: reference photo + driving video (or pose folder) -> mp4.

Steps: load the pipeline; pick the output size; poses (extract, align and draw them from the driving video,
or read a pose folder); the reference's face embedding and face box; the pipeline with a memory preset; write
the mp4 (and optionally a gif and PNG frames) atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .animator import SUPPORTED_SIZES, TINY_MODELS, TINY_PUPPET, TINY_RANDOM, TINY_SIZES, choose_resolution, model_settings  # noqa: F401  (re-exported)
from .errors import StableAnimatorError

REQUIRED_COMPONENTS = ("vae", "image_encoder", "feature_extractor", "unet", "pose_net", "face_encoder", "scheduler")


class AnimateError(StableAnimatorError):
    """A problem with the user's input or setup, reported as one line without a traceback."""


# ------------------------------------------------------------------------------------------------ pieces
def check_pipeline_folder(path: Path) -> None:
    """Name what is missing or damaged when a folder is not a loadable StableAnimator pipeline (cheap: configs and
    safetensors headers only)."""
    from safetensors import safe_open

    index = path / "model_index.json"
    if not index.is_file():
        raise AnimateError(f"--model {path} is not a diffusers pipeline folder: it has no model_index.json. Convert the official weights with `stableanimator convert`.")
    try:
        config = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnimateError(f"{index} is not valid JSON ({error}); convert or download the model again.") from None
    if not isinstance(config, dict) or config.get("_class_name") != "StableAnimatorPipeline":
        found = config.get("_class_name") if isinstance(config, dict) else None
        raise AnimateError(f"--model {path} holds a {found!r} pipeline, not a StableAnimatorPipeline ({index}).")
    missing = [name for name in REQUIRED_COMPONENTS if name not in config or not (path / name).is_dir()]
    if missing:
        raise AnimateError(f"--model {path} is missing pipeline component(s): {', '.join(missing)}.")
    for weights in sorted(path.glob("*/*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):
                pass
        except Exception as error:  # safetensors raises its own error type for truncated or foreign files
            raise AnimateError(f"{weights} is damaged ({error}); convert or download the model again.") from None


def looks_like_a_path(model: str) -> bool:
    """Hub ids are `owner/name`; anything else (./x, /x, ~/x, a/b/c, x/) is a folder the user meant."""
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") != 1 or model.endswith("/")


def check_model(model: str) -> None:
    """Before any work: a local folder must be a complete pipeline; a path that does not exist is not a Hub id."""
    if model in TINY_MODELS:
        return
    if Path(model).expanduser().exists():
        check_pipeline_folder(Path(model).expanduser())
    elif looks_like_a_path(model):
        raise AnimateError(f"--model {model}: no such folder. Give a converted pipeline folder, a Hub repo id (owner/name), '{TINY_PUPPET}' or '{TINY_RANDOM}'.")


def resolve_size(args, reference_size: tuple[int, int]) -> tuple[int, int]:
    supported = model_settings(args.model)["sizes"]
    if args.width or args.height:
        if not (args.width and args.height):
            raise AnimateError("Give both --width and --height, or neither (then the size is chosen from the reference).")
        if (args.width, args.height) not in supported:
            print(f"Warning: {args.width}x{args.height} is not a size the model was trained at "
                  f"({', '.join(f'{w}x{h}' for w, h in supported)}); expect lower quality.", file=sys.stderr)
        return args.width, args.height
    width, height = choose_resolution(*reference_size, supported=supported)
    print(f"Output size {width}x{height} (W x H): the supported size nearest the reference's aspect ratio "
          f"({reference_size[0]}x{reference_size[1]}). Use --width/--height to override.")
    return width, height


def load_face_analyzer(args):
    """The face models, loaded once for the face boxes and the embedding; None without `--face-models` (only with
    `--allow-no-face`, checked before any heavy work)."""
    if not args.face_models:
        if args.allow_no_face:
            return None
        raise AnimateError("--face-models (an antelopev2 folder) is needed for the face embedding; see docs/preprocessing.md. "
                           "Pass --allow-no-face to run without identity guidance.")
    from .preprocessing.face_analysis import FaceAnalyzer

    return FaceAnalyzer(args.face_models, device=args.device)


def output_paths(args) -> dict[str, Path]:
    """What `Animation.save` will write, by option name."""
    from .animator import output_targets

    return {"--" + name.replace("_", "-"): path for name, path in output_targets(args.out, args.gif, args.frames_dir).items()}


def check_outputs(args) -> None:
    """Before any work: the outputs are writable, replace only what this command writes, and touch no input."""
    from .outputs import check_not_inputs, check_replaceable_file, check_replaceable_folder, check_writable, own_frame_file

    if Path(args.out).suffix.lower() != ".mp4" and not Path(args.out).is_dir():
        raise AnimateError(f"--out must be an .mp4 path, got {args.out}.")
    outputs = output_paths(args)
    inputs = {"--image": args.image, "--video": args.video, "--poses": args.poses, "--face-models": args.face_models,
              "--det-model": args.det_model, "--pose-model": args.pose_model}
    if args.model not in TINY_MODELS and Path(args.model).expanduser().exists():
        inputs["--model"] = args.model
    check_not_inputs(outputs, inputs)
    for name, path in outputs.items():
        check_writable(path, name, folder=name == "--frames-dir")
        if name == "--frames-dir":
            check_replaceable_folder(path, name, args.overwrite, own_frame_file())
        else:
            check_replaceable_file(path, name, args.overwrite)


def check_numbers(args) -> None:
    """The numeric options, in the command's own words, before any work (argparse accepts nan, inf and 0)."""
    for option, value, low in (("--steps", args.steps, 1), ("--tile-size", args.tile_size, 2), ("--tile-overlap", args.tile_overlap, 1),
                               ("--stride", args.stride, 1), ("--max-frames", args.max_frames, 1), ("--width", args.width, 1),
                               ("--height", args.height, 1), ("--seed", args.seed, 0)):
        if value is not None and value < low:
            raise AnimateError(f"{option} must be at least {low}, got {value}.")
    for option, value, positive in (("--guidance", args.guidance, False), ("--noise-aug-strength", args.noise_aug_strength, False), ("--fps", args.fps, True)):
        if value is not None and not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise AnimateError(f"{option} must be a finite number {'above 0' if positive else 'of at least 0'}, got {value}.")
    if args.tile_overlap >= args.tile_size:
        raise AnimateError(f"--tile-overlap ({args.tile_overlap}) must be smaller than --tile-size ({args.tile_size}).")
    for option, value in (("--width", args.width), ("--height", args.height)):
        if value is not None and value % 64:
            raise AnimateError(f"{option} must be a multiple of 64, got {value} (the released weights are trained at 512x512 and 576x1024).")


def check_sources(args) -> None:
    if args.poses and not Path(args.poses).is_dir():
        raise AnimateError(f"--poses {args.poses}: no such folder; give the folder of pose frames that extract-poses wrote.")
    if args.video and not Path(args.video).exists():
        raise AnimateError(f"--video {args.video} does not exist; give a driving video file or a folder of its frames.")


# ------------------------------------------------------------------------------------------------ command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=f"pipeline folder or Hub repo id; '{TINY_PUPPET}': the shipped toy model trained on synthetic puppets; '{TINY_RANDOM}': random weights, to check an install")
    parser.add_argument("--image", required=True, help="reference photo")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="driving video (mp4/mov/webm) or folder of driving frames")
    source.add_argument("--poses", help="folder of pose frames already aligned to the reference (e.g. from extract-poses)")
    parser.add_argument("--out", required=True, help="output .mp4 path")
    parser.add_argument("--gif", action="store_true", help="also write a .gif next to the mp4")
    parser.add_argument("--frames-dir", help="also write the frames as PNGs into this folder")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--width", type=int, help="output width (default: chosen from the reference)")
    parser.add_argument("--height", type=int, help="output height (default: chosen from the reference)")
    parser.add_argument("--stride", type=int, default=1, help="use every N-th driving frame")
    parser.add_argument("--max-frames", type=int, help="at most this many frames")
    parser.add_argument("--fps", type=float, help="output frame rate (default: the driving video's / stride, else 8)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile-size", type=int, default=16)
    parser.add_argument("--tile-overlap", type=int, default=4)
    parser.add_argument("--noise-aug-strength", type=float, default=0.02)
    parser.add_argument("--face-optimization", choices=("auto", "on", "off"), default="auto",
                        help="HJB face optimisation: 'auto' (default) runs it when the model has a face recognizer and face boxes exist")
    parser.add_argument("--face-optimization-mode", choices=("face_crop", "full"), default="face_crop")
    parser.add_argument("--memory", choices=("high", "balanced", "low"), default="balanced")
    parser.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    parser.add_argument("--device", help="'cuda', 'cuda:1', 'cpu' (default: CUDA when available)")
    parser.add_argument("--face-models", help="antelopev2 folder for the face embedding (see docs/preprocessing.md)")
    parser.add_argument("--allow-no-face", action="store_true", help="go on with a zero face embedding when no face is found")
    parser.add_argument("--det-model", help="yolox_l.onnx for DWPose (default: the documented model folder)")
    parser.add_argument("--pose-model", help="dw-ll_ucoco_384.onnx for DWPose")
    parser.add_argument("--no-align", action="store_true", help="do not align the driving poses to the reference body")


def animate(args: argparse.Namespace, animator=None, tile_parallel: bool | None = None) -> list[Path]:
    """The `animate` command on the Python API (`animator.py`); returns the paths written. `animator`: models already
    loaded with the same --model, --dtype, --device, --memory and --face-models (animate-batch reuses them across
    jobs). `tile_parallel`: share the video's tiles among the processes of an `accelerate launch` / `torchrun` run
    (default: when there are several); then only the main process writes."""
    import torch

    from .animator import Animator, DrivingPoses
    from .images import REFERENCE_MIN_SIDE, open_image
    from .memory_presets import NEXT_LOWER, resolve_device
    from .parallel import TileParallel, join_launched_group, launched_processes

    # 1. Everything that can be checked without a model, before any heavy work
    check_numbers(args)
    check_sources(args)
    check_outputs(args)
    check_model(args.model)
    image = open_image(args.image, "--image", min_side=REFERENCE_MIN_SIDE)
    device = resolve_device(args.device)
    if tile_parallel is None:
        tile_parallel = launched_processes() > 1
    if tile_parallel:
        device = join_launched_group(device)
    width, height = resolve_size(args, image.size)
    if animator is None:
        analyzer = load_face_analyzer(args)
        animator = Animator.load_for_command(args, analyzer, device)
    elif animator.face_analyzer is None and not args.allow_no_face:
        load_face_analyzer(args)  # says that --face-models is needed

    # 2. The reference (one face analysis), the poses (in memory), the animation
    reference = animator.prepare_reference(image, width, height, allow_no_face=args.allow_no_face)
    if args.video:
        def extract():
            return animator.extract_poses(args.video, reference, stride=args.stride, max_frames=args.max_frames, align=not args.no_align)

        shared = TileParallel.from_group() if tile_parallel else None  # then the main process extracts for all
        poses = shared.computed_once("pose extraction", extract) if shared else extract()
    else:
        poses = DrivingPoses.load(args.poses, width, height, args.stride, args.max_frames, option="--poses")
    if tile_parallel:
        import torch.distributed as dist

        from .tiling import temporal_tiles

        animator.pipe.enable_tile_parallel()
        if dist.get_rank() == 0:
            print(f"denoising {len(temporal_tiles(len(poses.images), args.tile_size, args.tile_overlap))} tiles on {dist.get_world_size()} processes")
    try:
        animation = animator.animate(
            reference, poses, steps=args.steps, guidance=args.guidance, seed=args.seed, noise_aug_strength=args.noise_aug_strength,
            tile_size=args.tile_size, tile_overlap=args.tile_overlap, fps=args.fps,
            face_optimization=args.face_optimization, face_optimization_mode=args.face_optimization_mode,
        )
    except torch.OutOfMemoryError as error:
        lower = NEXT_LOWER[args.memory]
        hint = f"try --memory {lower}" if lower else "try fewer frames (--max-frames), a smaller --tile-size or a smaller size"
        raise AnimateError(f"Out of memory with --memory {args.memory}: {hint}.") from error
    if tile_parallel and torch.distributed.get_rank() != 0:
        return []  # one writer when processes share the video

    # 3. Every output at once
    outputs = output_paths(args)
    return animation.save(outputs["--out"], gif=args.gif, frames_dir=args.frames_dir, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext, redirect_stdout

    from .parallel import is_main_launched_process

    # Under `accelerate launch` every process runs this command: the main one speaks for all (errors still go
    # to stderr from each).
    with nullcontext() if is_main_launched_process() else redirect_stdout(open(os.devnull, "w")):
        for path in animate(args):
            print(f"wrote {os.fspath(path)}")
    return 0
