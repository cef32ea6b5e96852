"""`stableanimator extract-poses`: driving video + reference photo -> aligned skeleton frames,
keypoints and face boxes.

Writes into --out:
- `frame_<i>.png`: the skeleton images, i = 0, 1, ... (the pipeline's `poses`);
- `keypoints.npz`: the aligned keypoints (`load_poses`), with the alignment as `extra_scale`/`extra_offset`;
- `reference_keypoints.npz`: the reference photo's keypoints (when a reference is given);
- `face_boxes.json`: per-frame face boxes [x1, y1, x2, y2] (output pixels, x2/y2 exclusive) or null.

The folder is written under a temporary name and appears only once complete. An existing --out is replaced only
with --overwrite and only if it holds nothing but these files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUTPUT_FILES = ("keypoints.npz", "reference_keypoints.npz", "face_boxes.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="driving video (.mp4/.mov/.webm/...) or a folder of frames")
    parser.add_argument("--reference", help="reference photo; the skeletons are aligned to its body (required unless --no-align)")
    parser.add_argument("--out", required=True, help="output folder (must be empty or new, unless --overwrite)")
    parser.add_argument("--det-model", help="path to yolox_l.onnx (default: $STABLEANIMATOR_POSE_MODELS or ~/.cache/stableanimator/models/dwpose)")
    parser.add_argument("--pose-model", help="path to dw-ll_ucoco_384.onnx (same default folder)")
    parser.add_argument("--face-models", help="antelopev2 folder; if given, the face-box margin is calibrated on the reference's detected face")
    parser.add_argument("--stride", type=int, default=1, help="keep every N-th driving frame (default 1)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many kept frames")
    parser.add_argument("--no-align", action="store_true", help="draw the driving poses as they are, without aligning them to the reference body")
    parser.add_argument("--width", type=int, help="output width (default: the reference's, else the video's)")
    parser.add_argument("--height", type=int, help="output height (default: the reference's, else the video's)")
    parser.add_argument("--device", default=None, help="'cpu', 'cuda' or 'cuda:<i>' (default: CUDA when available to onnxruntime)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per DWPose batch (default 8)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder (replacing earlier outputs there)")


def _own_output(path: Path) -> bool:
    from ..outputs import own_frame_file

    return path.name in OUTPUT_FILES or own_frame_file()(path)


def _check_output(args: argparse.Namespace) -> None:
    """--out replaces only an earlier extract-poses folder, and never an input."""
    from ..outputs import check_not_inputs, check_replaceable_folder, check_writable

    check_not_inputs({"--out": args.out}, {"--video": args.video, "--reference": args.reference, "--face-models": args.face_models,
                                          "--det-model": args.det_model, "--pose-model": args.pose_model})
    check_writable(args.out, "--out", folder=True)
    check_replaceable_folder(args.out, "--out", args.overwrite, _own_output)


def _check_args(args: argparse.Namespace) -> None:
    from ._common import onnx_providers

    if args.reference is None and not args.no_align:
        raise ValueError("--reference is required to align the poses (or pass --no-align to skip alignment).")
    if args.face_models and args.reference is None:
        raise ValueError("--face-models calibrates the face boxes on the reference: pass --reference too.")
    if (args.width is None) != (args.height is None):
        raise ValueError("Give both --width and --height, or neither (then the reference's size is used).")
    for name in ("width", "height", "batch_size", "stride", "max_frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}.")
    if not Path(args.video).exists():
        raise FileNotFoundError(f"--video {args.video} does not exist; give a driving video file or a folder of its frames.")
    onnx_providers(args.device)  # an unknown or missing device is reported now, not after reading the video


def extract_poses(args: argparse.Namespace, face_analyzer=None) -> dict:
    """The `extract-poses` steps. `face_analyzer`: already loaded face models to use instead of loading
    `args.face_models` again."""
    import numpy as np
    from tqdm.auto import tqdm

    from ..images import REFERENCE_MIN_SIDE, open_image
    from ..outputs import StagedOutputs
    from .alignment import align_poses
    from .drawing import render_pose
    from .dwpose import DWPoseDetector
    from .face_boxes import BOX_CONVENTION, DEFAULT_FACE_BOX_MARGIN, FaceBoxMargin, face_boxes_from_poses, margin_to_dict
    from .keypoints import save_poses
    from .video_io import read_frames, write_image

    _check_args(args)
    _check_output(args)
    reference_image = np.asarray(open_image(args.reference, "--reference", min_side=REFERENCE_MIN_SIDE)) if args.reference else None
    detector = DWPoseDetector(args.det_model, args.pose_model, device=args.device)
    frames = read_frames(args.video, stride=args.stride, max_frames=args.max_frames)
    reference_pose = detector(reference_image) if reference_image is not None else None
    driving = detector.detect_video(frames, batch_size=args.batch_size, progress=True)
    aligned, transform = align_poses(reference_pose, driving, enabled=not args.no_align)
    width, height = (args.width, args.height) if args.width else (transform.width, transform.height)

    margin, margin_source, reference_box = DEFAULT_FACE_BOX_MARGIN, "default", None
    if args.face_models:
        from .face_analysis import FaceAnalyzer

        face = (face_analyzer or FaceAnalyzer(args.face_models, device=args.device)).analyze(reference_image)
        margin, margin_source = FaceBoxMargin.calibrate(reference_pose, face.bbox), "reference"
        sx, sy = width / reference_image.shape[1], height / reference_image.shape[0]
        reference_box = [float(face.bbox[0] * sx), float(face.bbox[1] * sy), float(face.bbox[2] * sx), float(face.bbox[3] * sy)]
    boxes = face_boxes_from_poses(aligned, width, height, margin)

    summary = {
        "width": width,
        "height": height,
        "aligned": not args.no_align,
        "alignment": {"scale": list(transform.scale), "offset": list(transform.offset)},
        "margin": margin_to_dict(margin),
        "margin_source": margin_source,
        "reference_box": reference_box,
        "box_convention": BOX_CONVENTION,
        "boxes": [list(b) if b is not None else None for b in boxes],
    }
    # The folder appears only when complete: an interrupted run leaves no partial pose set for `animate` to take.
    with StagedOutputs() as staged:
        out = staged.folder(args.out)
        for i, pose in enumerate(tqdm(aligned, desc="Drawing", unit="frame")):
            write_image(out / f"frame_{i}.png", render_pose(pose, width, height))
        save_poses(out / "keypoints.npz", aligned, scale=np.array(transform.scale), offset=np.array(transform.offset))
        if reference_pose is not None:
            save_poses(out / "reference_keypoints.npz", [reference_pose])
        (out / "face_boxes.json").write_text(json.dumps(summary, indent=2))
    return summary


def run(args: argparse.Namespace) -> int:
    summary = extract_poses(args)
    found = sum(b is not None for b in summary["boxes"])
    print(
        f"Wrote {len(summary['boxes'])} pose frames ({summary['width']}x{summary['height']}) to {args.out}; "
        f"face boxes in {found} of them."
    )
    return 0
