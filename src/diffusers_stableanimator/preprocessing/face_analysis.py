"""Face detection and the ArcFace identity embedding with insightface (extra `[face]`).

StableAnimator's face encoder takes the **raw** 512-d ArcFace embedding (`face.embedding`, not the
L2-normalised one) of the **largest** face (by unclipped box area) of the reference photo, computed
with insightface's antelopev2 pack: SCRFD-10G detector (`scrfd_10g_bnkps.onnx`) at det_size 640x640
and the glintr100 recognizer (`glintr100.onnx`). Only these two models are loaded.

Colour convention (`color_order`):
- insightface expects **BGR** arrays (it swaps to RGB internally). The released StableAnimator weights
  were trained with correct BGR input (`cv2.imread` output), so the default `color_order="bgr"`
  converts our RGB images to BGR before calling insightface: the embedding matches training.
- The official *inference* scripts read the image with OpenCV and then swap it again by mistake, so
  insightface got RGB (both detector and recognizer saw swapped channels). `color_order="rgb"` reproduces
  that, for parity with results of the official inference scripts. The embeddings differ.
Training also resized the reference to the training resolution before detection; to match it,
call the analyzer on the reference already resized to the generation size (as the pipeline feeds it).

Model files are never downloaded. They are looked for in the folder given as `model_dir`, else
`$STABLEANIMATOR_FACE_MODELS`, else `$STABLEANIMATOR_MODELS/antelopev2`, else
`~/.cache/stableanimator/models/antelopev2`. The insightface model zoo is licensed for
non-commercial research only; see docs/preprocessing.md.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._common import ModelFilesNotFoundError, check_files, load_onnx_model, load_rgb, models_root, onnx_providers, require_cv2

FACE_MODELS_ENV = "STABLEANIMATOR_FACE_MODELS"
DETECTOR_FILE = "scrfd_10g_bnkps.onnx"
RECOGNIZER_FILE = "glintr100.onnx"
EMBEDDING_DIM = 512
HOW_TO_GET_FACE_MODELS = (
    "They come from insightface's `antelopev2` model pack (non-commercial research use only): download "
    "antelopev2.zip from the insightface model zoo (github.com/deepinsight/insightface, "
    "python-package / model_zoo), unzip it so the .onnx files sit directly in the folder, and pass that "
    f"folder as `model_dir` (CLI: --face-models) or set {FACE_MODELS_ENV}. See docs/preprocessing.md."
)


class NoFaceDetectedError(ValueError):
    """No face was found in the image."""


def default_face_model_dir() -> Path:
    return Path(os.environ.get(FACE_MODELS_ENV, models_root() / "antelopev2")).expanduser()


def _require_insightface():
    try:
        from insightface import model_zoo
        from insightface.app.common import Face
    except ImportError as error:
        raise ImportError(
            'Face analysis needs insightface and onnxruntime: `pip install "diffusers-stableanimator[face]"`.'
        ) from error
    return model_zoo, Face


@dataclass
class FaceInfo:
    """One detected face. `bbox` (x1, y1, x2, y2) and `landmarks` (5, 2: eyes, nose, mouth corners)
    are in pixels of the analysed image, unclipped; `embedding` is the raw (512,) float32 ArcFace
    vector."""

    bbox: np.ndarray
    landmarks: np.ndarray
    score: float
    embedding: np.ndarray

    @property
    def area(self) -> float:
        return float((self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1]))


class FaceAnalyzer:
    """insightface detector + recognizer for the identity embedding.

    Args:
        model_dir: folder holding `scrfd_10g_bnkps.onnx` and `glintr100.onnx` (an antelopev2 pack).
        device: "cpu", "cuda", "cuda:<i>" or None (CUDA only when torch and onnxruntime both support it).
        color_order: "bgr" (default, the training convention) or "rgb" (official inference-script parity).
        det_size: detector input size, (640, 640) like StableAnimator.
        det_thresh: detection score threshold (insightface's default 0.5).

    Example:
        >>> analyzer = FaceAnalyzer("~/models/antelopev2")
        >>> embedding = analyzer.get_embedding(reference_image)  # np.ndarray (512,) float32, raw
        >>> face_embeds = torch.from_numpy(embedding)[None]       # (1, 512) for the pipeline
    """

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        *,
        device: Any = None,
        color_order: str = "bgr",
        det_size: tuple[int, int] = (640, 640),
        det_thresh: float = 0.5,
        providers: list | None = None,
    ):
        if color_order not in ("bgr", "rgb"):
            raise ValueError(f'color_order must be "bgr" (training convention) or "rgb" (official inference parity), got {color_order!r}.')
        self.color_order = color_order
        self.det_size = tuple(det_size)
        folder = Path(model_dir).expanduser() if model_dir is not None else default_face_model_dir()
        if not folder.is_dir():
            raise ModelFilesNotFoundError(
                f"Face model folder {str(folder)!r} does not exist. It must contain {DETECTOR_FILE} and "
                f"{RECOGNIZER_FILE}. {HOW_TO_GET_FACE_MODELS}"
            )
        detector_path, recognizer_path = folder / DETECTOR_FILE, folder / RECOGNIZER_FILE
        check_files(folder, [detector_path, recognizer_path], "Face analysis (antelopev2)", HOW_TO_GET_FACE_MODELS)
        model_zoo, self._face_cls = _require_insightface()
        providers = providers or onnx_providers(device)
        on_gpu = any((p[0] if isinstance(p, tuple) else p) == "CUDAExecutionProvider" for p in providers)
        ctx_id = 0 if on_gpu else -1  # insightface's prepare(ctx_id<0) pins its sessions to CPU
        get_model = lambda path: model_zoo.get_model(path, providers=providers)  # noqa: E731
        self.detector = load_onnx_model(detector_path, get_model, HOW_TO_GET_FACE_MODELS)
        self.recognizer = load_onnx_model(recognizer_path, get_model, HOW_TO_GET_FACE_MODELS)
        for model, path, task in ((self.detector, detector_path, "detection"), (self.recognizer, recognizer_path, "recognition")):
            if model is None or getattr(model, "taskname", None) != task:
                raise ValueError(f"{path} is not a face {task} model insightface recognises. Is the antelopev2 pack complete and unmodified?")
        self.detector.prepare(ctx_id, input_size=self.det_size, det_thresh=det_thresh)
        self.recognizer.prepare(ctx_id)

    def _to_insightface(self, image: Any) -> np.ndarray:
        rgb = load_rgb(image)
        return np.ascontiguousarray(rgb[:, :, ::-1]) if self.color_order == "bgr" else rgb

    def detect_faces(self, image: Any) -> list[FaceInfo]:
        """All faces with their embeddings, largest first. `image`: RGB array, PIL image or path."""
        array = self._to_insightface(image)
        boxes, landmarks = self.detector.detect(array, input_size=self.det_size, max_num=0)
        faces = []
        for i in range(boxes.shape[0]):
            face = self._face_cls(bbox=boxes[i, :4], kps=landmarks[i], det_score=boxes[i, 4])
            self.recognizer.get(array, face)  # aligns on the 5 landmarks and sets face.embedding
            faces.append(
                FaceInfo(
                    bbox=np.asarray(boxes[i, :4], dtype=np.float32),
                    landmarks=np.asarray(landmarks[i], dtype=np.float32),
                    score=float(boxes[i, 4]),
                    embedding=np.asarray(face.embedding, dtype=np.float32).reshape(EMBEDDING_DIM),
                )
            )
        faces.sort(key=lambda f: f.area, reverse=True)  # stable: ties keep detection order
        return faces

    def analyze(self, image: Any, allow_no_face: bool = False) -> FaceInfo | None:
        """The largest face. Raises `NoFaceDetectedError` when there is none, unless `allow_no_face`
        (then returns None)."""
        faces = self.detect_faces(image)
        if faces:
            return faces[0]
        if allow_no_face:
            return None
        raise NoFaceDetectedError(
            "No face was detected in the reference image. StableAnimator needs a clearly visible, roughly "
            "frontal face: use a photo where the face is at least ~64 px wide and not cut off. To go on "
            "without identity guidance, pass allow_no_face=True (a zero embedding is used)."
        )

    def reference_face(self, image: Any, width: int, height: int, allow_no_face: bool = False) -> FaceInfo | None:
        """The reference's largest face as the released weights were trained on it: the one recipe of the package.

        Training read the reference with OpenCV, resized it to the training size with `cv2.resize` (bilinear,
        no anti-aliasing) and gave insightface a BGR image; so this resizes to the generation size `width` x
        `height` the same way and analyses with this analyzer's colour order (BGR by default). Pillow's resize
        filters anti-alias when shrinking and give another embedding. The box is in the resized image's pixels."""
        rgb = load_rgb(image)
        if (rgb.shape[1], rgb.shape[0]) != (width, height):
            rgb = require_cv2().resize(rgb, (width, height), interpolation=require_cv2().INTER_LINEAR)
        return self.analyze(rgb, allow_no_face=allow_no_face)

    def reference_embedding(self, image: Any, width: int, height: int, allow_no_face: bool = False) -> np.ndarray:
        """The raw embedding of `reference_face` (a zero vector and a warning without a face, with `allow_no_face`)."""
        face = self.reference_face(image, width, height, allow_no_face=allow_no_face)
        if face is None:
            warnings.warn("No face detected in the reference image; using a zero face embedding.", stacklevel=2)
            return np.zeros(EMBEDDING_DIM, dtype=np.float32)
        return face.embedding

    def get_embedding(self, image: Any, allow_no_face: bool = False) -> np.ndarray:
        """Raw (512,) float32 ArcFace embedding of the largest face. With `allow_no_face=True` a face-less
        image gives a zero vector and a warning instead of `NoFaceDetectedError`."""
        face = self.analyze(image, allow_no_face=allow_no_face)
        if face is None:
            warnings.warn("No face detected in the reference image; using a zero face embedding.", stacklevel=2)
            return np.zeros(EMBEDDING_DIM, dtype=np.float32)
        return face.embedding
