"""DWPose whole-body pose estimation with ONNX Runtime, numpy and OpenCV only.

Two ONNX models from the DWPose release (Hugging Face Hub, e.g. `yzd-v/DWPose`):
- `yolox_l.onnx`: YOLOX person detector, input (1, 3, 640, 640), output (1, 8400, 85).
- `dw-ll_ucoco_384.onnx`: RTMPose-style whole-body model, input (B, 3, 384, 288), outputs
  `simcc_x` (B, 133, 576) and `simcc_y` (B, 133, 768).

Stages (all inputs are RGB uint8 images, as in StableAnimator's scripts):
1. YOLOX: letterbox into 640x640 (top-left, pad 114, no normalisation), decode the 3 grids,
   class-aware NMS over all 80 classes (score > 0.1, IoU 0.45), then keep persons with score > 0.3.
   When no person is left the whole image is used as one box, so there is always one "person".
2. RTMPose: box padded by 1.25 and widened/heightened to the model's 3:4 aspect, affine crop,
   ImageNet normalisation, SimCC decode (argmax, score = min of the two maxima, split ratio 2).
3. Remap the 133 COCO-WholeBody points to OpenPose order with a neck inserted (134 points) and build
   a `PoseFrame` (normalised coordinates, feet dropped).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ._common import check_files, load_onnx_model, load_rgb, models_root, onnx_providers, require_cv2, require_onnxruntime
from .keypoints import PoseFrame

DET_MODEL_NAME = "yolox_l.onnx"
POSE_MODEL_NAME = "dw-ll_ucoco_384.onnx"
POSE_MODELS_ENV = "STABLEANIMATOR_POSE_MODELS"
HOW_TO_GET_POSE_MODELS = (
    f"Download `{DET_MODEL_NAME}` and `{POSE_MODEL_NAME}` from the DWPose release on the Hugging Face "
    "Hub (for example `hf download yzd-v/DWPose yolox_l.onnx dw-ll_ucoco_384.onnx "
    "--local-dir ~/.cache/stableanimator/models/dwpose`), then pass their paths "
    f"(--det-model/--pose-model, or DWPoseDetector(det_model_path, pose_model_path)) or set "
    f"{POSE_MODELS_ENV} to the folder holding them. See docs/preprocessing.md."
)

YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD_VALUE = 114
DET_SCORE_THRESHOLD = 0.1
DET_NMS_IOU = 0.45
PERSON_SCORE_THRESHOLD = 0.3
BBOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
POSE_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
POSE_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

# Final OpenPose-ordered index j takes post-neck-insertion index OPENPOSE_PERMUTATION[j].
OPENPOSE_PERMUTATION = np.array([0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3] + list(range(18, 134)))


def default_pose_model_dir() -> Path:
    return Path(os.environ.get(POSE_MODELS_ENV, models_root() / "dwpose")).expanduser()


# --------------------------------------------------------------------------------------------------
# YOLOX
# --------------------------------------------------------------------------------------------------


def yolox_preprocess(image: np.ndarray, input_size: tuple[int, int] = (640, 640)) -> tuple[np.ndarray, float]:
    """Letterbox an RGB image into the detector input. Returns a (3, H, W) float32 blob and the ratio r
    (input pixels per image pixel)."""
    cv2 = require_cv2()
    in_w, in_h = input_size
    h, w = image.shape[:2]
    ratio = min(in_h / h, in_w / w)  # may upscale, like the reference
    new_w, new_h = int(w * ratio), int(h * ratio)
    canvas = np.full((in_h, in_w, 3), YOLOX_PAD_VALUE, dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1).astype(np.float32), ratio


def yolox_grid(input_size: tuple[int, int] = (640, 640)) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell (x, y) and stride of every output row, in the model's concatenation order."""
    in_w, in_h = input_size
    grids, strides = [], []
    for s in YOLOX_STRIDES:
        xs, ys = np.meshgrid(np.arange(in_w // s), np.arange(in_h // s))  # row index = y * W + x
        grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
        strides.append(np.full((grids[-1].shape[0], 1), s))
    return np.concatenate(grids).astype(np.float64), np.concatenate(strides).astype(np.float64)


def yolox_decode(output: np.ndarray, ratio: float, input_size: tuple[int, int] = (640, 640)) -> tuple[np.ndarray, np.ndarray]:
    """Decode raw YOLOX rows [tx, ty, tw, th, obj, cls_0..cls_79] to xyxy boxes in image pixels and
    (rows, 80) class scores obj*cls (both already sigmoided inside the ONNX)."""
    pred = np.asarray(output, dtype=np.float64).reshape(-1, output.shape[-1])
    grid, stride = yolox_grid(input_size)
    if pred.shape[0] != grid.shape[0]:
        raise ValueError(
            f"YOLOX output has {pred.shape[0]} rows but a {input_size[0]}x{input_size[1]} input with "
            f"strides {YOLOX_STRIDES} gives {grid.shape[0]}. Is {DET_MODEL_NAME} the right model?"
        )
    centers = (pred[:, :2] + grid) * stride  # no half-cell offset in YOLOX
    sizes = np.exp(pred[:, 2:4]) * stride
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1) / ratio
    scores = pred[:, 4:5] * pred[:, 5:]
    return boxes, scores


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS with the +1 pixel area convention. Returns kept indices, highest score first."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return keep


def multiclass_nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = DET_NMS_IOU, score_threshold: float = DET_SCORE_THRESHOLD
) -> np.ndarray:
    """Class-aware NMS over every class. Returns (K, 6) rows [x1, y1, x2, y2, score, class], class by
    class in class order, each class's rows by descending score."""
    results = []
    for c in range(scores.shape[1]):
        valid = scores[:, c] > score_threshold
        if not valid.any():
            continue
        b, s = boxes[valid], scores[valid, c]
        keep = nms(b, s, iou_threshold)
        results.append(np.concatenate([b[keep], s[keep, None], np.full((len(keep), 1), c)], axis=1))
    return np.concatenate(results) if results else np.zeros((0, 6))


def select_people(detections: np.ndarray, score_threshold: float = PERSON_SCORE_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes (class 0) with score > threshold, most confident first; boxes are not clipped."""
    keep = (detections[:, 5] == 0) & (detections[:, 4] > score_threshold)
    return detections[keep, :4], detections[keep, 4]


# --------------------------------------------------------------------------------------------------
# RTMPose / SimCC
# --------------------------------------------------------------------------------------------------


def box_to_center_scale(box: Sequence[float], input_size: tuple[int, int] = (288, 384), padding: float = BBOX_PADDING):
    """Centre and (width, height) of the crop for a box: padded by 1.25, then grown along one axis to
    the model's aspect ratio (width/height = 288/384)."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    sw, sh = (x1 - x0) * padding, (y1 - y0) * padding
    aspect = input_size[0] / input_size[1]
    scale = np.array([sw, sw / aspect]) if sw > aspect * sh else np.array([sh * aspect, sh])
    return center, scale


def crop_matrix(center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int] = (288, 384)) -> np.ndarray:
    """2x3 affine map from image pixels to model-input pixels (no rotation; OpenCV's integer pixel
    centres, so no half-pixel shift). k = input_w / scale_w = input_h / scale_h."""
    k = input_size[0] / scale[0]
    return np.array([[k, 0.0, input_size[0] / 2 - k * center[0]], [0.0, k, input_size[1] / 2 - k * center[1]]])


def pose_preprocess(image: np.ndarray, box: Sequence[float], input_size: tuple[int, int] = (288, 384)):
    """Crop one box for the pose model. Returns a (3, H, W) float32 blob, centre and scale."""
    cv2 = require_cv2()
    center, scale = box_to_center_scale(box, input_size)
    crop = cv2.warpAffine(image, crop_matrix(center, scale, input_size), input_size, flags=cv2.INTER_LINEAR)
    blob = (crop.astype(np.float32) - POSE_MEAN) / POSE_STD
    return blob.transpose(2, 0, 1), center, scale


def simcc_decode(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = SIMCC_SPLIT_RATIO):
    """SimCC argmax decode. Returns locations (N, K, 2) in model-input pixels and scores (N, K).

    score = min(max_x, max_y); where score <= 0 both locations become -1 (before the division by the
    split ratio, like the reference)."""
    x_loc = np.argmax(simcc_x, axis=-1).astype(np.float64)
    y_loc = np.argmax(simcc_y, axis=-1).astype(np.float64)
    scores = np.minimum(np.max(simcc_x, axis=-1), np.max(simcc_y, axis=-1)).astype(np.float64)
    locs = np.stack([x_loc, y_loc], axis=-1)
    locs[scores <= 0] = -1
    return locs / split_ratio, scores


def crop_to_image(locs: np.ndarray, center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int] = (288, 384)) -> np.ndarray:
    """Inverse of `crop_matrix` for keypoints (K, 2)."""
    return locs / np.asarray(input_size, dtype=np.float64) * scale + center - scale / 2


def coco_wholebody_to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 133, 2) COCO-WholeBody keypoints + (N, 133) scores -> (N, 134, 2) + (N, 134) in OpenPose
    body order with a neck inserted at body index 1.

    The neck sits at the shoulder midpoint whatever the shoulders' visibility; its score is 1 when
    both shoulders score > 0.3, else 0."""
    full = np.concatenate([np.asarray(keypoints, np.float64), np.asarray(scores, np.float64)[..., None]], axis=-1)
    neck = full[:, [5, 6]].mean(axis=1)
    neck[:, 2] = ((full[:, 5, 2] > 0.3) & (full[:, 6, 2] > 0.3)).astype(np.float64)
    full = np.concatenate([full[:, :17], neck[:, None], full[:, 17:]], axis=1)
    full = full[:, OPENPOSE_PERMUTATION]  # fancy indexing copies: the remap is simultaneous
    return full[..., :2], full[..., 2]


# --------------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------------


def _is_dynamic(dim: Any) -> bool:
    return not isinstance(dim, int) or dim <= 0


class DWPoseDetector:
    """Whole-body pose detector (YOLOX + DWPose RTMPose), returning `PoseFrame`s.

    Args:
        det_model_path: `yolox_l.onnx`. Default: `<pose model folder>/yolox_l.onnx`, where the folder
            is `$STABLEANIMATOR_POSE_MODELS`, else `$STABLEANIMATOR_MODELS/dwpose`, else
            `~/.cache/stableanimator/models/dwpose`.
        pose_model_path: `dw-ll_ucoco_384.onnx`, same default folder.
        device: "cpu", "cuda", "cuda:<i>" or None (CUDA when torch and onnxruntime both support it).
        providers: explicit ONNX Runtime providers; overrides `device`.

    Call it on an RGB image (array, PIL image or path) to get a `PoseFrame`; `detect_video` runs a
    sequence and batches the pose model over all person boxes when the ONNX has a dynamic batch axis.
    """

    def __init__(
        self,
        det_model_path: str | os.PathLike | None = None,
        pose_model_path: str | os.PathLike | None = None,
        *,
        device: Any = None,
        providers: list | None = None,
    ):
        folder = default_pose_model_dir()
        det = Path(det_model_path).expanduser() if det_model_path else folder / DET_MODEL_NAME
        pose = Path(pose_model_path).expanduser() if pose_model_path else folder / POSE_MODEL_NAME
        looked_in = folder if not (det_model_path and pose_model_path) else None
        check_files(looked_in, [det, pose], "DWPose", HOW_TO_GET_POSE_MODELS)
        ort = require_onnxruntime()
        providers = providers or onnx_providers(device)
        session = lambda path: ort.InferenceSession(path, providers=providers)  # noqa: E731
        self.det_session = load_onnx_model(det, session, HOW_TO_GET_POSE_MODELS)
        self.pose_session = load_onnx_model(pose, session, HOW_TO_GET_POSE_MODELS)

        det_input = self.det_session.get_inputs()[0]
        self.det_input_name = det_input.name
        h, w = det_input.shape[2:4]
        self.det_input_size = (w, h) if not (_is_dynamic(w) or _is_dynamic(h)) else (640, 640)
        self.det_batched = _is_dynamic(det_input.shape[0])

        pose_input = self.pose_session.get_inputs()[0]
        self.pose_input_name = pose_input.name
        h, w = pose_input.shape[2:4]
        if _is_dynamic(w) or _is_dynamic(h):
            raise ValueError(f"{pose}: the pose model needs a fixed input size, found {pose_input.shape}.")
        self.pose_input_size = (int(w), int(h))
        self.pose_batched = _is_dynamic(pose_input.shape[0])
        names = [o.name for o in self.pose_session.get_outputs()]
        if len(names) < 2:
            raise ValueError(f"{pose}: expected two outputs (simcc_x, simcc_y), found {names}.")
        # Use the names when they are the standard ones, else the export order (x first).
        self.pose_output_names = ["simcc_x", "simcc_y"] if {"simcc_x", "simcc_y"} <= set(names) else names[:2]

    # ---- stages ---------------------------------------------------------------------------------

    def _run_detector(self, blobs: list[np.ndarray]) -> list[np.ndarray]:
        if self.det_batched and len(blobs) > 1:
            out = self.det_session.run(None, {self.det_input_name: np.stack(blobs)})[0]
            return list(out)
        return [self.det_session.run(None, {self.det_input_name: b[None]})[0][0] for b in blobs]

    def _people_from_output(self, output: np.ndarray, ratio: float, width: int, height: int) -> np.ndarray:
        boxes, scores = yolox_decode(output, ratio, self.det_input_size)
        people, _ = select_people(multiclass_nms(boxes, scores))
        if len(people) == 0:  # nobody found: the whole image is one person box (reference behaviour)
            people = np.array([[0.0, 0.0, float(width), float(height)]])
        return people

    def detect_people(self, image: Any) -> np.ndarray:
        """Person boxes (K >= 1, 4) xyxy in pixels, most confident first (whole image if none)."""
        image = load_rgb(image)
        blob, ratio = yolox_preprocess(image, self.det_input_size)
        return self._people_from_output(self._run_detector([blob])[0], ratio, image.shape[1], image.shape[0])

    def _run_pose(self, blobs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        feed = lambda x: {self.pose_input_name: x.astype(np.float32)}  # noqa: E731
        if self.pose_batched:
            xs, ys = self.pose_session.run(self.pose_output_names, feed(np.stack(blobs)))
        else:
            outs = [self.pose_session.run(self.pose_output_names, feed(b[None])) for b in blobs]
            xs = np.concatenate([o[0] for o in outs])
            ys = np.concatenate([o[1] for o in outs])
        return xs, ys

    def estimate_keypoints(self, image: Any, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """COCO-WholeBody keypoints (N, 133, 2) in pixels and scores (N, 133) for each box."""
        image = load_rgb(image)
        return self._keypoints_for([(image, boxes)])[0]

    def _keypoints_for(self, items: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        blobs, params, counts = [], [], []
        for image, boxes in items:
            counts.append(len(boxes))
            for box in boxes:
                blob, center, scale = pose_preprocess(image, box, self.pose_input_size)
                blobs.append(blob)
                params.append((center, scale))
        simcc_x, simcc_y = self._run_pose(blobs)
        locs, scores = simcc_decode(simcc_x, simcc_y)
        kpts = np.stack([crop_to_image(l, c, s, self.pose_input_size) for l, (c, s) in zip(locs, params)])
        results, start = [], 0
        for n in counts:
            results.append((kpts[start : start + n], scores[start : start + n]))
            start += n
        return results

    # ---- public entry points --------------------------------------------------------------------

    def __call__(self, image: Any) -> PoseFrame:
        return self.detect_video([image])[0]

    def detect_video(self, frames: Iterable[Any], batch_size: int = 8, progress: bool = False) -> list[PoseFrame]:
        """Detect every frame. Frames are processed `batch_size` at a time: the detector runs them as
        one batch when its ONNX allows it, and the pose model runs all their person boxes as one batch
        (one box at a time when its batch axis is fixed)."""
        frames = list(frames)
        results: list[PoseFrame] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(frames), desc="DWPose", unit="frame")
        for start in range(0, len(frames), batch_size):
            images = [load_rgb(f) for f in frames[start : start + batch_size]]
            prepared = [yolox_preprocess(im, self.det_input_size) for im in images]
            outputs = self._run_detector([blob for blob, _ in prepared])
            boxes = [
                self._people_from_output(out, ratio, im.shape[1], im.shape[0])
                for out, (_, ratio), im in zip(outputs, prepared, images)
            ]
            for im, (kpts, scores) in zip(images, self._keypoints_for(list(zip(images, boxes)))):
                kpts, scores = coco_wholebody_to_openpose(kpts, scores)
                results.append(PoseFrame.from_wholebody(kpts, scores, im.shape[1], im.shape[0]))
            if bar is not None:
                bar.update(len(images))
        if bar is not None:
            bar.close()
        return results
