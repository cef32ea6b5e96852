"""The Python API under the `animate`, `animate-batch` and `extract-poses` commands.

    from diffusers_stableanimator import Animator

    animator = Animator.load("stableanimator-diffusers", face_models="~/.cache/stableanimator/models/antelopev2")
    animator.animate("ref.png", "driving.mp4").save("out.mp4")

The steps, each usable alone: load the models once (`Animator.load`); prepare a reference once
(`prepare_reference`: the output size, the face embedding by the training recipe and the face box, from one face
analysis); extract the driving poses in memory (`extract_poses`; `DrivingPoses.save` / `DrivingPoses.load` read
and write the `extract-poses` folder); animate (`animate` -> `Animation`); write (`Animation.save`: mp4, gif,
PNG frames, by the package's file rules). Bad input raises `StableAnimatorError` naming the argument.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image

from .errors import StableAnimatorError
from .testing import TINY_RANDOM  # light modules: only names are imported from them here
from .tiny_puppet import TINY_PUPPET

TINY_MODELS = (TINY_RANDOM, TINY_PUPPET)  # built-in 64-pixel models, named instead of a folder or repo id
SUPPORTED_SIZES = [(512, 512), (576, 1024)]  # (width, height) the released weights are trained at
TINY_SIZES = [(64, 64), (64, 128)]  # the tiny models' stand-ins, same aspect-ratio logic (tiny-puppet: trained at 64x64)
DEFAULT_FPS = 8.0  # when neither the caller nor the driving video says
POSE_FOLDER_FILES = ("keypoints.npz", "reference_keypoints.npz", "face_boxes.json")  # beside the frame_<i>.png


def own_pose_folder_file(path: Path) -> bool:
    """A file that a pose folder (`DrivingPoses.save`, `extract-poses`) holds: replaceable with --overwrite."""
    from .outputs import own_frame_file

    return path.name in POSE_FOLDER_FILES or own_frame_file()(path)


def choose_resolution(reference_width: int, reference_height: int, supported=SUPPORTED_SIZES) -> tuple[int, int]:
    """The supported (width, height) whose aspect ratio is nearest the reference's (compared in log scale)."""
    aspect = math.log(reference_width / reference_height)
    return min(supported, key=lambda size: abs(math.log(size[0] / size[1]) - aspect))


# ------------------------------------------------------------------------------------------------ what flows
@dataclass
class Reference:
    """A reference photo prepared for one output size."""

    image: PIL.Image.Image  # upright RGB, at its own size
    width: int  # the output size it was prepared for
    height: int
    face_embedding: np.ndarray  # raw (512,) ArcFace embedding by the training recipe; zeros without a face
    face_box: tuple[float, float, float, float] | None  # the face in the image's own pixels (x2/y2 exclusive)


@dataclass
class DrivingPoses:
    """Pose images at the output size, as the model sees them, with what face optimisation and the writer need."""

    images: list[PIL.Image.Image]
    face_boxes: list | None  # one Box (x2/y2 exclusive, output pixels) or None per frame; None: unknown
    fps: float | None  # the driving video's frame rate after the stride, if known
    keypoints: list | None = None  # the aligned PoseFrames (extraction only)
    reference_keypoints: Any = None  # the reference's PoseFrame (extraction only)
    details: dict = field(default_factory=dict)  # alignment and margin, recorded in face_boxes.json

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the `extract-poses` folder (frames, keypoints, face boxes); it appears only once complete."""
        from .outputs import StagedOutputs, check_replaceable_folder, check_writable
        from .preprocessing.face_boxes import BOX_CONVENTION
        from .preprocessing.keypoints import save_poses
        from .preprocessing.video_io import write_image

        check_writable(folder, "folder", folder=True)
        check_replaceable_folder(folder, "folder", overwrite, own_pose_folder_file)
        width, height = self.images[0].size
        summary = {"width": width, "height": height, **self.details, "box_convention": BOX_CONVENTION,
                   "boxes": [list(b) if b is not None else None for b in (self.face_boxes or [None] * len(self.images))]}
        with StagedOutputs() as staged:
            out = staged.folder(folder)
            for i, image in enumerate(self.images):
                write_image(out / f"frame_{i}.png", image)
            if self.keypoints is not None:
                alignment = self.details.get("alignment", {"scale": [1.0, 1.0], "offset": [0.0, 0.0]})
                save_poses(out / "keypoints.npz", self.keypoints, scale=np.array(alignment["scale"]), offset=np.array(alignment["offset"]))
            if self.reference_keypoints is not None:
                save_poses(out / "reference_keypoints.npz", [self.reference_keypoints])
            (out / "face_boxes.json").write_text(json.dumps(summary, indent=2))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike, width: int | None = None, height: int | None = None, stride: int = 1,
             max_frames: int | None = None, option: str = "poses") -> DrivingPoses:
        """Read a pose folder (`extract-poses` writes one); face boxes come from its face_boxes.json when present.
        `option` names the folder in messages (`--poses` on the command line)."""
        from .preprocessing.face_boxes import read_face_boxes
        from .preprocessing.video_io import list_frame_files, read_frames

        folder = Path(folder)
        if not folder.is_dir():
            raise StableAnimatorError(f"{option} {folder}: no such folder; give the folder of pose frames that extract-poses wrote.")
        files = list_frame_files(folder)
        stray = sorted(p.name for p in folder.iterdir() if p not in files and p.name not in POSE_FOLDER_FILES and not p.name.startswith("."))
        if stray:
            raise StableAnimatorError(f"{option} {folder} holds {', '.join(stray[:3])}, which {'is not a pose frame' if len(stray) == 1 else 'are not pose frames'}; "
                                      "move them away (a pose folder holds only frame images, as extract-poses writes it).")
        images = [PIL.Image.fromarray(frame) for frame in read_frames(folder, stride=stride, max_frames=max_frames)]
        odd = [(path.name, image.size) for path, image in zip(files[::stride], images) if image.size != images[0].size]
        if odd:
            raise StableAnimatorError(f"{option} {folder}: {odd[0][0]} is {odd[0][1][0]}x{odd[0][1][1]} but the first frame is "
                                      f"{images[0].size[0]}x{images[0].size[1]}; all pose frames must have one size (run extract-poses again).")
        width, height = width or images[0].size[0], height or images[0].size[1]
        boxes = None
        if (folder / "face_boxes.json").is_file():
            boxes = read_face_boxes(folder / "face_boxes.json", width, height)
            if len(boxes) != len(files):
                raise StableAnimatorError(f"{option} {folder} holds {len(files)} pose frames but face_boxes.json lists {len(boxes)}: "
                                          "an incomplete or mixed extract-poses folder; run extract-poses again.")
            boxes = boxes[::stride][:max_frames]
        return cls(images=images, face_boxes=boxes, fps=None)


@dataclass
class Animation:
    """The generated frames and their frame rate."""

    frames: list[PIL.Image.Image]
    fps: float

    def save(self, out: str | os.PathLike, gif: bool = False, frames_dir: str | os.PathLike | None = None,
             overwrite: bool = False) -> list[Path]:
        """Write the mp4 (and a gif next to it, and PNG frames) together, once all are complete; existing outputs
        only with `overwrite`, and a frames folder only if it holds nothing but frame files."""
        from .outputs import StagedOutputs, check_replaceable_file, check_replaceable_folder, check_writable, own_frame_file
        from .preprocessing.video_io import write_frames, write_video

        targets = output_targets(out, gif, frames_dir)
        for name, path in targets.items():
            check_writable(path, name, folder=name == "frames_dir")
            if name == "frames_dir":
                check_replaceable_folder(path, name, overwrite, own_frame_file())
            else:
                check_replaceable_file(path, name, overwrite)
        with StagedOutputs() as staged:
            for name, path in targets.items():
                if name == "frames_dir":
                    write_frames(staged.folder(path), self.frames)
                else:
                    write_video(staged.file(path), self.frames, fps=self.fps)
        return list(targets.values())


def output_targets(out: str | os.PathLike, gif: bool = False, frames_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The files an `Animation.save` writes, by argument name."""
    out = Path(out)
    if out.suffix.lower() != ".mp4" and not out.is_dir():
        raise StableAnimatorError(f"out must be an .mp4 path, got {out}.")
    targets = {"out": out}
    if gif:
        targets["gif"] = out.with_suffix(".gif")
    if frames_dir:
        targets["frames_dir"] = Path(frames_dir)
    return targets


# ------------------------------------------------------------------------------------------------ the models
def model_settings(model: str) -> dict:
    """What depends on the model beyond its weights: the output sizes it was trained at, how its training
    poses were drawn (tiny-puppet: `render_pose_small`, whose strokes survive at 64 px), and whether its frames are
    decoded in one chunk whatever the memory preset (tiny-puppet: as it was measured, see `Animator`)."""
    from .preprocessing.drawing import render_pose, render_pose_small

    return {"sizes": TINY_SIZES if model in TINY_MODELS else SUPPORTED_SIZES,
            "pose_renderer": render_pose_small if model == TINY_PUPPET else render_pose,
            "decode_in_one_chunk": model == TINY_PUPPET}


class Animator:
    """The pipeline and the preprocessing models, loaded once and used for any number of references and videos.

    Args:
        pipe: A `StableAnimatorPipeline` (None for preprocessing only, as `extract-poses` does).
        face_analyzer: A `FaceAnalyzer` for the reference's embedding and face box (None: no identity guidance).
        det_model, pose_model: DWPose ONNX files (default: the documented model folder), loaded on first use.
        device: Where the pipeline and the ONNX models run (default: CUDA when available).
        memory: The memory preset (`"high"`, `"balanced"`, `"low"`; see `memory_presets.py`).
        sizes: The output sizes a reference's size is matched to (the trained sizes).
        pose_renderer: Draws a `PoseFrame` at (width, height) as the model saw its training poses (default:
            `render_pose`, the official drawing; `model_settings` gives the built-in models' choice).
        say: Where progress lines go (`print`; `lambda line: None` to stay quiet).
        decode_in_one_chunk: Decode all frames at once instead of in the memory preset's chunks. tiny-puppet's
            temporal decoder mixes neighbouring frames and was measured decoding whole videos; the default preset's
            4-frame chunks cost it about 0.2 dB PSNR* on held-out puppets, and at 64x64 the memory is negligible.
    """

    def __init__(self, pipe=None, face_analyzer=None, det_model=None, pose_model=None, device=None, memory: str = "balanced",
                 sizes: Sequence[tuple[int, int]] = SUPPORTED_SIZES, say: Callable[[str], Any] = print,
                 pose_renderer: Callable[[Any, int, int], np.ndarray] | None = None, decode_in_one_chunk: bool = False):
        from .preprocessing.drawing import render_pose

        self.pipe, self.face_analyzer, self.pose_renderer = pipe, face_analyzer, pose_renderer or render_pose
        self.det_model, self.pose_model, self._pose_detector = det_model, pose_model, None
        self.device, self.memory, self.sizes, self.say = device, memory, list(sizes), say
        self._call_kwargs = {}
        if pipe is not None:
            from .memory_presets import apply_memory_preset, resolve_device

            self.device = resolve_device(device, "device")
            self._call_kwargs = apply_memory_preset(pipe, memory, self.device)
            if decode_in_one_chunk:
                self._call_kwargs["decode_chunk_size"] = None  # the pipeline's "all frames"

    @classmethod
    def load(cls, model: str, face_models: str | os.PathLike | None = None, det_model=None, pose_model=None, device=None,
             dtype: str = "auto", memory: str = "balanced", say: Callable[[str], Any] = print) -> Animator:
        """Load a converted pipeline (folder or Hub repo id, or `"tiny-random"`) and the face models."""
        from .memory_presets import resolve_device, resolve_dtype

        torch_device = resolve_device(device, "device")
        pipe = load_pipeline(model, resolve_dtype(dtype, torch_device), say)
        analyzer = None
        if face_models:
            from .preprocessing.face_analysis import FaceAnalyzer

            analyzer = FaceAnalyzer(face_models, device=device)
        return cls(pipe, analyzer, det_model, pose_model, torch_device, memory, say=say, **model_settings(model))

    @classmethod
    def load_for_command(cls, args, face_analyzer=None, device=None) -> Animator:
        """`load` from the command line's options (errors name them: --model, --device). `device`: already resolved."""
        from .memory_presets import resolve_device, resolve_dtype

        device = device or resolve_device(args.device)
        pipe = load_pipeline(args.model, resolve_dtype(args.dtype, device), option="--model")
        return cls(pipe, face_analyzer, args.det_model, args.pose_model, device, args.memory, **model_settings(args.model))

    @property
    def pose_detector(self):
        if self._pose_detector is None:
            from .preprocessing.dwpose import DWPoseDetector

            self._pose_detector = DWPoseDetector(self.det_model, self.pose_model, device=None if self.device is None else str(self.device))
        return self._pose_detector

    # -------------------------------------------------------------------------------------------- reference
    def output_size(self, image: PIL.Image.Image) -> tuple[int, int]:
        return choose_resolution(*image.size, supported=self.sizes)

    def prepare_reference(self, image: Any, width: int | None = None, height: int | None = None, allow_no_face: bool = False) -> Reference:
        """The reference at an output size (default: the trained size nearest its aspect ratio), with its face
        embedding and face box from one analysis of the reference at that size (the training recipe)."""
        from .images import REFERENCE_MIN_SIDE, from_array, open_image, to_rgb

        if isinstance(image, (str, os.PathLike)):
            image = open_image(image, "image", min_side=REFERENCE_MIN_SIDE)
        elif isinstance(image, PIL.Image.Image):
            image = to_rgb(image, "image")
        else:
            image = from_array(image, "image")
        if (width is None) != (height is None):
            raise StableAnimatorError("Give both width and height, or neither (then the size is chosen from the reference).")
        width, height = (width, height) if width else self.output_size(image)
        if self.face_analyzer is None:
            if not allow_no_face:
                raise StableAnimatorError("The face embedding needs face models (face_models=, an antelopev2 folder; see docs/preprocessing.md); "
                                          "allow_no_face=True runs without identity guidance.")
            self.say("No face models: using a zero face embedding (no identity guidance).")
            return Reference(image, width, height, np.zeros(512, dtype=np.float32), None)
        face = self.face_analyzer.reference_face(image, width, height, allow_no_face=allow_no_face)
        if face is None:
            self.say("No face found in the reference: using a zero face embedding (no identity guidance).")
            return Reference(image, width, height, np.zeros(512, dtype=np.float32), None)
        sx, sy = image.size[0] / width, image.size[1] / height  # the box back in the reference's own pixels
        box = tuple(float(v) for v in (face.bbox[0] * sx, face.bbox[1] * sy, face.bbox[2] * sx, face.bbox[3] * sy))
        return Reference(image, width, height, face.embedding, box)

    # -------------------------------------------------------------------------------------------- poses
    def extract_poses(self, video: str | os.PathLike, reference: Reference | None = None, width: int | None = None,
                      height: int | None = None, stride: int = 1, max_frames: int | None = None, align: bool = True,
                      batch_size: int = 8) -> DrivingPoses:
        """DWPose on a driving video (file or folder of frames), aligned to the reference's body and rendered as
        the model saw its training poses, with per-frame face boxes (margin calibrated on the reference's face)."""
        from .preprocessing.alignment import align_poses
        from .preprocessing.face_boxes import DEFAULT_FACE_BOX_MARGIN, FaceBoxMargin, face_boxes_from_poses, margin_to_dict
        from .preprocessing.video_io import read_frames, video_fps

        if align and reference is None:
            raise StableAnimatorError("Aligning the poses needs the reference (reference=), or align=False.")
        detector = self.pose_detector
        frames = read_frames(video, stride=stride, max_frames=max_frames)
        reference_pose = detector(np.asarray(reference.image)) if reference is not None else None
        driving = detector.detect_video(frames, batch_size=batch_size, progress=True)
        if not any(pose.body_visible.any() for pose in driving):
            raise StableAnimatorError(f"No person was detected in any frame of {video}; use a driving video that shows a person.")
        aligned, transform = align_poses(reference_pose, driving, enabled=align)
        if width is None:
            width, height = (reference.width, reference.height) if reference is not None else (transform.width, transform.height)
        margin, margin_source, reference_box = DEFAULT_FACE_BOX_MARGIN, "default", None
        if reference is not None and reference.face_box is not None:
            margin, margin_source = FaceBoxMargin.calibrate(reference_pose, reference.face_box), "reference"
            sx, sy = width / reference.image.size[0], height / reference.image.size[1]
            x1, y1, x2, y2 = reference.face_box
            reference_box = [x1 * sx, y1 * sy, x2 * sx, y2 * sy]
        fps = None if Path(video).is_dir() else (video_fps(video) or None)
        return DrivingPoses(
            images=[PIL.Image.fromarray(self.pose_renderer(pose, width, height)) for pose in aligned],
            face_boxes=face_boxes_from_poses(aligned, width, height, margin),
            fps=None if fps is None else fps / stride,
            keypoints=aligned,
            reference_keypoints=reference_pose,
            details={"aligned": align, "alignment": {"scale": list(transform.scale), "offset": list(transform.offset)},
                     "margin": margin_to_dict(margin), "margin_source": margin_source, "reference_box": reference_box},
        )

    # -------------------------------------------------------------------------------------------- animation
    def animate(self, reference: Reference | Any, poses: DrivingPoses | str | os.PathLike, steps: int = 25, guidance: float = 3.0,
                seed: int = 0, noise_aug_strength: float = 0.02, tile_size: int = 16, tile_overlap: int = 4,
                fps: float | None = None, face_optimization: str = "auto", face_optimization_mode: str = "face_crop",
                allow_no_face: bool = False, stride: int = 1, max_frames: int | None = None) -> Animation:
        """Animate a reference (a `Reference`, or a photo: path, PIL image or array) along driving poses: `DrivingPoses`,
        a folder written by extract-poses (recognised by its face_boxes.json or keypoints.npz), or a driving video
        (a file or a folder of its frames), whose poses are then extracted. Other pose folders: `DrivingPoses.load`.
        `face_optimization`: `"auto"` runs it when the model has a face recognizer and face boxes exist, `"on"`
        requires it, `"off"`."""
        import torch

        if self.pipe is None:
            raise StableAnimatorError("This Animator has no pipeline; create it with Animator.load(model, ...).")
        if face_optimization not in ("auto", "on", "off"):
            raise StableAnimatorError(f"face_optimization must be 'auto', 'on' or 'off', got {face_optimization!r}.")
        if not isinstance(reference, Reference):
            reference = self.prepare_reference(reference, allow_no_face=allow_no_face)
        if not isinstance(poses, DrivingPoses):
            source = Path(poses)
            is_pose_folder = source.is_dir() and ((source / "face_boxes.json").is_file() or (source / "keypoints.npz").is_file())
            poses = (DrivingPoses.load(source, reference.width, reference.height, stride, max_frames) if is_pose_folder
                     else self.extract_poses(source, reference, stride=stride, max_frames=max_frames))
        call_kwargs = dict(self._call_kwargs)
        call_kwargs.update(self._face_optimization_kwargs(face_optimization, face_optimization_mode, reference, poses))
        frames = self.pipe(
            reference.image, poses.images, face_embeds=reference.face_embedding, height=reference.height, width=reference.width,
            num_inference_steps=steps, min_guidance_scale=guidance, max_guidance_scale=guidance, noise_aug_strength=noise_aug_strength,
            tile_size=tile_size, tile_overlap=tile_overlap, generator=torch.Generator().manual_seed(seed), **call_kwargs,
        ).frames[0]
        return Animation(frames, fps or poses.fps or DEFAULT_FPS)

    def _face_optimization_kwargs(self, setting: str, mode: str, reference: Reference, poses: DrivingPoses) -> dict:
        if setting == "off":
            return {}
        missing = [what for what, ok in (("a face_recognizer component", self.pipe.face_recognizer is not None),
                                         ("face boxes (from a driving video, or face_boxes.json in a pose folder)", poses.face_boxes is not None),
                                         ("a face in the reference", reference.face_box is not None)) if not ok]
        if missing and setting == "on":
            raise StableAnimatorError(f"Face optimisation (on) needs {', '.join(missing)}.")
        if missing:
            self.say(f"Face optimisation off: it needs {', '.join(missing)}.")
            return {}
        why = "asked for" if setting == "on" else "auto: the model has a face recognizer and face boxes were found"
        self.say(f"Face optimisation on ({why}); its steps take longer.")
        return {"face_optimization": {"mode": mode}, "face_boxes": poses.face_boxes, "reference_face_box": reference.face_box}


def load_pipeline(model: str, dtype, say: Callable[[str], Any] = print, option: str = "model"):
    """A converted pipeline folder or Hub repo id (or `"tiny-random"`, `"tiny-puppet"`), with one-line errors for the usual failures."""
    import torch

    from .memory_presets import cast_pipeline
    from .pipeline_stableanimator import StableAnimatorPipeline
    from .testing import tiny_random_pipeline

    if model == TINY_RANDOM:
        say("Using the tiny random model: the output is noise (an install check, not an animation).")
        pipe = tiny_random_pipeline()
        pipe.set_progress_bar_config(disable=None)  # a progress bar on terminals (the test builder turns it off)
        return pipe if dtype == torch.float32 else cast_pipeline(pipe, dtype)
    if model == TINY_PUPPET:
        from .tiny_puppet import load_tiny_puppet

        say("Using the tiny puppet model: trained on synthetic 64x64 puppets only (docs/puppets.md); real people come out as puppets.")
        pipe = load_tiny_puppet(dtype)
        pipe.set_progress_bar_config(disable=None)
        return pipe
    local = Path(model).expanduser()
    try:
        return StableAnimatorPipeline.from_pretrained(str(local) if local.exists() else model, dtype=dtype)
    except Exception as error:  # network, Hub and file errors come in many types; the user needs one line
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        where = "the folder may be incomplete: convert or download it again" if local.exists() else "check the repo id, your network and Hub login, or give a local folder"
        raise StableAnimatorError(f"{option} {model} could not be loaded ({reason}); {where}.") from None
