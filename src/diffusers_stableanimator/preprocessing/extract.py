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
from pathlib import Path


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


def _check_output(args: argparse.Namespace) -> None:
    """--out replaces only an earlier extract-poses folder, and never an input."""
    from ..animator import own_pose_folder_file
    from ..outputs import check_not_inputs, check_replaceable_folder, check_writable

    check_not_inputs({"--out": args.out}, {"--video": args.video, "--reference": args.reference, "--face-models": args.face_models,
                                          "--det-model": args.det_model, "--pose-model": args.pose_model})
    check_writable(args.out, "--out", folder=True)
    check_replaceable_folder(args.out, "--out", args.overwrite, own_pose_folder_file)


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


def extract_poses(args: argparse.Namespace):
    """The `extract-poses` command on the Python API (`Animator.extract_poses`, `DrivingPoses.save`)."""
    from ..animator import Animator
    from ..images import REFERENCE_MIN_SIDE, open_image

    _check_args(args)
    _check_output(args)
    reference_image = open_image(args.reference, "--reference", min_side=REFERENCE_MIN_SIDE) if args.reference else None
    analyzer = None
    if args.face_models:
        from .face_analysis import FaceAnalyzer

        analyzer = FaceAnalyzer(args.face_models, device=args.device)
    animator = Animator(None, analyzer, args.det_model, args.pose_model, device=args.device)
    animator.pose_detector  # noqa: B018  (missing or damaged DWPose files are reported before the video is read)
    reference = None
    if reference_image is not None:  # the face box (for the margin) is measured at the reference's own size
        reference = animator.prepare_reference(reference_image, *reference_image.size, allow_no_face=True)
    poses = animator.extract_poses(args.video, reference, args.width, args.height, stride=args.stride, max_frames=args.max_frames,
                                   align=not args.no_align, batch_size=args.batch_size)
    poses.save(args.out, overwrite=args.overwrite)
    return poses


def run(args: argparse.Namespace) -> int:
    poses = extract_poses(args)
    found = sum(b is not None for b in poses.face_boxes)
    width, height = poses.images[0].size
    print(f"Wrote {len(poses.images)} pose frames ({width}x{height}) to {args.out}; face boxes in {found} of them.")
    return 0
