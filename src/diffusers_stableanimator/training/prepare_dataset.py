"""`stableanimator prepare-dataset`: raw videos -> the training layout of `StableAnimatorVideoDataset`.

For each video, into `<out>/<video name>/`:
- `images/frame_<i>.png`: the (sampled) frames at their own size;
- `poses/frame_<i>.png`: DWPose skeletons drawn at the frame's size, not aligned (as the official training data);
- `faces/frame_<i>.png`: face masks, 255 inside every detected face's box (the union), all 255 when no face
  is found (the official fallback: the whole frame then counts as face in the loss);
- `face_embedding.npy`: the raw 512-d ArcFace embedding of the person, computed once per video on the frame
  with the largest face, resized to the training size as in training (the data loader then reads it instead of
  running face analysis in every step).
and `<out>/videos.txt` listing the prepared folders. A video folder is built under a temporary name and moved
into place when complete; videos already prepared are skipped unless --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

VIDEO_LIST = "videos.txt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", help="video files, folders of frames, or folders containing videos")
    parser.add_argument("--out", required=True, help="dataset folder (created if needed)")
    parser.add_argument("--face-models", help="antelopev2 folder (default: the documented model folder)")
    parser.add_argument("--det-model", help="yolox_l.onnx (default: the documented DWPose folder)")
    parser.add_argument("--pose-model", help="dw-ll_ucoco_384.onnx")
    parser.add_argument("--stride", type=int, default=1, help="keep every N-th frame")
    parser.add_argument("--max-frames", type=int, help="at most this many frames per video")
    parser.add_argument("--width", type=int, default=512, help="training width the face embedding is computed at")
    parser.add_argument("--height", type=int, default=512, help="training height the face embedding is computed at")
    parser.add_argument("--device", help="'cpu' or 'cuda' for the ONNX models (default: CUDA when available)")
    parser.add_argument("--overwrite", action="store_true", help="prepare again videos whose folder exists")


def find_videos(sources: list[str]) -> list[Path]:
    from ..preprocessing.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    videos = []
    for source in map(Path, sources):
        if source.is_file():
            videos.append(source)
        elif source.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in source.iterdir()):
            videos.append(source)  # a folder of frames is one video
        elif source.is_dir():
            videos += sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS or p.is_dir())
        else:
            raise FileNotFoundError(f"{source} does not exist.")
    if not videos:
        raise ValueError(f"No videos found in {', '.join(sources)}.")
    names = [v.stem for v in videos]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Several videos are named {', '.join(duplicates)}; each video's name becomes its folder name.")
    return videos


def face_mask(faces, width: int, height: int):
    """Union of the faces' boxes (inclusive, truncated like the official cv2.rectangle), or all 255 if none."""
    import numpy as np

    if not faces:
        return np.full((height, width), 255, dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    for face in faces:
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        mask[max(y1, 0) : max(y2 + 1, 0), max(x1, 0) : max(x2 + 1, 0)] = 255
    return mask


FRAME_FOLDERS = ("images", "poses", "faces")  # a video's folder holds these and face_embedding.npy


def own_video_file(path: Path) -> bool:
    """A file, relative to a video's folder, of the training layout (what `prepare_video` writes)."""
    from ..outputs import own_frame_file

    parts = path.parts
    return parts == ("face_embedding.npy",) or (len(parts) == 2 and parts[0] in FRAME_FOLDERS and own_frame_file()(path))


def own_video_folder(path: Path) -> bool:
    return len(path.parts) == 1 and path.parts[0] in FRAME_FOLDERS


def prepare_video(video: Path, target: Path, detector, analyzer, args) -> int:
    import numpy as np
    from PIL import Image
    from tqdm.auto import tqdm

    from ..preprocessing.drawing import draw_pose
    from ..outputs import StagedOutputs
    from ..preprocessing.video_io import read_frames, write_frames

    frames = read_frames(video, stride=args.stride, max_frames=args.max_frames)
    with StagedOutputs() as staged:  # the video's folder appears, or replaces the old one, only once complete
        staging = staged.folder(target)
        write_frames(staging / "images", frames)
        poses = detector.detect_video(frames, progress=False)
        write_frames(staging / "poses", [draw_pose(pose, f.shape[1], f.shape[0]) for pose, f in zip(poses, frames)])
        masks, best = [], None
        for index, frame in enumerate(tqdm(frames, desc=f"Faces in {video.name}", unit="frame", leave=False)):
            faces = analyzer.detect_faces(frame)
            masks.append(face_mask(faces, frame.shape[1], frame.shape[0]))
            if faces and (best is None or faces[0].area > best[1]):
                best = (index, faces[0].area)
        (staging / "faces").mkdir()
        for index, mask in enumerate(masks):  # single-channel PNGs, as the official masks
            Image.fromarray(mask).save(staging / "faces" / f"frame_{index}.png")
        if best is None:
            raise ValueError(f"No face was detected in any frame of {video}; it cannot be used to train identity.")
        np.save(staging / "face_embedding.npy", analyzer.reference_embedding(frames[best[0]], args.width, args.height, allow_no_face=True))
    return len(frames)


def run(args: argparse.Namespace) -> int:
    from ..outputs import atomic_file, check_writable, foreign_entries, relation, shown
    from ..preprocessing.dwpose import DWPoseDetector
    from ..preprocessing.face_analysis import FaceAnalyzer

    out = Path(args.out)
    videos = find_videos(args.videos)
    check_writable(out, "--out", folder=True)
    detector = DWPoseDetector(args.det_model, args.pose_model, device=args.device)
    analyzer = FaceAnalyzer(args.face_models, device=args.device)
    out.mkdir(parents=True, exist_ok=True)
    prepared, failed = [], 0
    for video in videos:
        target = out / video.stem
        foreign = foreign_entries(target, own_video_file, own_video_folder) if target.is_dir() else []
        if foreign or relation(target, video):
            failed += 1
            why = f"holds files prepare-dataset does not write ({shown(foreign)}); move them away first" if foreign else "is or holds the video itself; choose another --out"
            print(f"{video.name}: skipped: {target} {why}.", file=sys.stderr)
            continue
        if target.is_dir() and not args.overwrite:
            print(f"{video.name}: already prepared, skipped ({target})")
            prepared.append(target)
            continue
        try:
            count = prepare_video(video, target, detector, analyzer, args)
        except ValueError as error:
            failed += 1
            print(f"{video.name}: skipped: {error}", file=sys.stderr)
            continue
        print(f"{video.name}: {count} frames -> {target}")
        prepared.append(target)
    atomic_file(out / VIDEO_LIST, lambda tmp: tmp.write_text("".join(f"{p.name}\n" for p in prepared)))
    print(f"{len(prepared)} videos in {out / VIDEO_LIST}" + (f"; {failed} skipped" if failed else ""))
    return 1 if failed else 0
