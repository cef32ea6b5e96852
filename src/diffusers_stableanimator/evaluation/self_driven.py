"""The self-driven reconstruction protocol of the paper's Table 1: animate the first frame of each test video with
that video's own poses, at the video's size, with one seed; the generated videos are then scored against the
real ones like any other pair of folders.

Poses are read from a folder per video (as `stableanimator extract-poses --video <video> --no-align` writes
them). The pipeline is loaded once for all videos; every generated video is written as PNG frames (lossless,
so the metrics see what the model produced, not an mp4 encoder's losses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import StableAnimatorError
from ..preprocessing.video_io import iter_frames, list_frame_files, write_frames


@dataclass
class Protocol:
    model: str
    seed: int = 42
    steps: int = 25
    guidance: float = 3.0
    memory: str = "balanced"
    max_frames: int | None = None


def pose_folder(poses: Path, name: str) -> Path:
    folder = poses / name
    try:
        list_frame_files(folder)
    except (FileNotFoundError, NotADirectoryError):
        raise StableAnimatorError(
            f"--dataset-poses {poses} has no pose frames for the video {name} (expected {folder}/frame_<i>.png); "
            f"write them with `stableanimator extract-poses --video <the video> --no-align --out {folder}`."
        ) from None
    return folder


def first_frame(video: Path):
    from PIL import Image

    frame = next(iter_frames(video), None)
    if frame is None:
        raise StableAnimatorError(f"--dataset video {video} has no frames; remove it from the dataset.")
    return Image.fromarray(frame)


def generate(pairs: list[tuple[str, Path]], poses: Path, out: Path, protocol: Protocol, device, face_analyzer=None, progress=None) -> None:
    """Animate every `(name, real video)` into `out/<name>/frame_<i>.png`."""
    import torch

    from ..animate import check_model
    from ..animator import Animator, DrivingPoses, load_pipeline, model_settings
    from ..memory_presets import resolve_dtype

    device = torch.device(device)
    check_model(protocol.model)
    folders = {name: pose_folder(poses, name) for name, _ in pairs}  # all checked before the model is loaded
    pipe = load_pipeline(protocol.model, resolve_dtype("auto", device), option="--model")
    animator = Animator(pipe, face_analyzer, device=device, memory=protocol.memory, say=lambda line: None, **model_settings(protocol.model))
    for name, video in progress(pairs) if progress else pairs:
        image = first_frame(video)
        width, height = image.size
        if width % 64 or height % 64:
            raise StableAnimatorError(f"--dataset video {video} is {width}x{height}; the model generates sizes that are multiples of 64: resize the test videos (the released weights are trained at 512x512 and 576x1024).")
        # No face models: a zero embedding (no identity guidance); face optimisation stays off in this protocol.
        reference = animator.prepare_reference(image, width, height, allow_no_face=True)
        driving = DrivingPoses.load(folders[name], width, height, max_frames=protocol.max_frames, option="--dataset-poses")
        animation = animator.animate(reference, driving, steps=protocol.steps, guidance=protocol.guidance, seed=protocol.seed,
                                     face_optimization="off")
        write_frames(out / name, animation.frames)
