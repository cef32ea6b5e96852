"""Fixtures building tiny ONNX models with known outputs (never committed; *.onnx is gitignored).

- `make_scrfd(path, faces)`: an SCRFD-like face detector (9 outputs: 3 score, 3 bbox, 3 kps maps for
  strides 8/16/32, 2 anchors per cell) that always reports the given faces, whatever the input.
- `make_recognizer(path)`: a 1x3x112x112 -> 1x512 "ArcFace": per-channel mean of the input times a
  fixed matrix plus a bias, so the embedding of a uniform image can be computed by hand.
- `make_yolox(path, people)`: a 1x3x640x640 -> 1x8400x85 detector reporting the given boxes.
- `make_pose_model(path, locs, scores)`: a (B)x3x384x288 -> simcc_x Bx133x576, simcc_y Bx133x768
  model whose SimCC peaks sit at the given model-input locations.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]

SCRFD_STRIDES = (8, 16, 32)
# A face at stride-32 cell (10, 8): anchor centre (320, 256); distances in stride units.
KNOWN_FACE = {"stride": 32, "cell": (10, 8), "dist": (2.0, 2.5, 2.0, 2.5), "score": 0.9}
KNOWN_FACE_BOX = (256.0, 176.0, 384.0, 336.0)  # in 640x640 detector pixels
FACE_KPS_OFFSETS = ((-0.8, -0.6), (0.8, -0.6), (0.0, 0.2), (-0.6, 1.0), (0.6, 1.0))  # stride units


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _zero_from_input(nodes, initializers, input_name: str) -> str:
    """A scalar 0 computed from the input, so constant outputs still consume the graph input."""
    initializers.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"))
    nodes.append(helper.make_node("ReduceMean", [input_name], ["input_mean"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["input_mean", "zero_f"], ["input_zero"], name="times_zero"))
    return "input_zero"


def scrfd_outputs(faces) -> list[np.ndarray]:
    """Score, bbox and kps maps (non-batched, (N, C)) for the given faces at a 640x640 input."""
    scores, boxes, kpss = [], [], []
    for s in SCRFD_STRIDES:
        n = (640 // s) ** 2 * 2
        scores.append(np.zeros((n, 1), np.float32))
        boxes.append(np.zeros((n, 4), np.float32))
        kpss.append(np.zeros((n, 10), np.float32))
    for face in faces:
        k = SCRFD_STRIDES.index(face["stride"])
        gx, gy = face["cell"]
        row = 2 * (gy * (640 // face["stride"]) + gx)  # first of the two anchors of that cell
        scores[k][row, 0] = face["score"]
        boxes[k][row] = face["dist"]
        kpss[k][row] = np.array(face.get("kps", FACE_KPS_OFFSETS), np.float32).ravel()
    return scores + boxes + kpss


def make_scrfd(path: Path, faces=(KNOWN_FACE,)) -> Path:
    nodes, inits = [], []
    zero = _zero_from_input(nodes, inits, "input.1")
    outputs = []
    for i, value in enumerate(scrfd_outputs(faces)):
        inits.append(numpy_helper.from_array(value, f"const_{i}"))
        nodes.append(helper.make_node("Add", [f"const_{i}", zero], [f"out_{i}"], name=f"out_add_{i}"))
        outputs.append(helper.make_tensor_value_info(f"out_{i}", TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(
        nodes, "scrfd_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs, inits,
    )
    return _save(graph, path)


RECOGNIZER_SEED = 0


def recognizer_weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(RECOGNIZER_SEED)
    return rng.normal(size=(3, 512)).astype(np.float32), rng.normal(size=(512,)).astype(np.float32)


def make_recognizer(path: Path) -> Path:
    w, b = recognizer_weights()
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["proj"], name="fc"),
        helper.make_node("Add", ["proj", "fc_b"], ["embedding"], name="fc_bias"),
    ]
    graph = helper.make_graph(
        nodes, "recognizer_like",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(w, "fc_w"), numpy_helper.from_array(b, "fc_b")],
    )
    return _save(graph, path)


def yolox_rows(people) -> np.ndarray:
    """(8400, 85) raw rows. Each entry: dict(box=(x1,y1,x2,y2) in 640 input pixels, obj, cls, score,
    stride). The box centre picks the cell; tx/ty/tw/th reproduce the box exactly."""
    rows = np.zeros((8400, 85), np.float32)
    offsets = {8: 0, 16: 6400, 32: 8000}
    for p in people:
        s = p.get("stride", 32)
        x1, y1, x2, y2 = p["box"]
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        gx, gy = int(cx // s), int(cy // s)
        row = offsets[s] + gy * (640 // s) + gx
        rows[row, :4] = [cx / s - gx, cy / s - gy, math.log(w / s), math.log(h / s)]
        rows[row, 4] = p.get("obj", 1.0)
        rows[row, 5 + p.get("cls", 0)] = p["score"]
    return rows


def make_yolox(path: Path, people=()) -> Path:
    nodes, inits = [], []
    zero = _zero_from_input(nodes, inits, "images")
    inits.append(numpy_helper.from_array(yolox_rows(people)[None], "rows"))
    nodes.append(helper.make_node("Add", ["rows", zero], ["output"], name="out_add"))
    graph = helper.make_graph(
        nodes, "yolox_like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 85])],
        inits,
    )
    return _save(graph, path)


def simcc_maps(locs: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SimCC maps with a single peak (value = score) at bin round(2 * loc) for each keypoint."""
    x = np.zeros((1, 133, 576), np.float32)
    y = np.zeros((1, 133, 768), np.float32)
    for k, ((lx, ly), s) in enumerate(zip(locs, scores)):
        x[0, k, int(round(lx * 2))] = s
        y[0, k, int(round(ly * 2))] = s
    return x, y


def make_pose_model(path: Path, locs: np.ndarray, scores: np.ndarray, dynamic_batch: bool = True) -> Path:
    sx, sy = simcc_maps(locs, scores)
    nodes, inits = [], [numpy_helper.from_array(sx, "sx"), numpy_helper.from_array(sy, "sy")]
    zero = _zero_from_input(nodes, inits, "input")
    inits += [
        numpy_helper.from_array(np.array([133, 576], np.int64), "tail_x"),
        numpy_helper.from_array(np.array([133, 768], np.int64), "tail_y"),
    ]
    nodes += [
        helper.make_node("Shape", ["input"], ["batch"], start=0, end=1),
        helper.make_node("Concat", ["batch", "tail_x"], ["shape_x"], axis=0),
        helper.make_node("Concat", ["batch", "tail_y"], ["shape_y"], axis=0),
        helper.make_node("Add", ["sx", zero], ["sx0"], name="add_x"),
        helper.make_node("Add", ["sy", zero], ["sy0"], name="add_y"),
        helper.make_node("Expand", ["sx0", "shape_x"], ["simcc_x"]),
        helper.make_node("Expand", ["sy0", "shape_y"], ["simcc_y"]),
    ]
    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "rtmpose_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 384, 288])],
        [
            helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [batch, 133, 576]),
            helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [batch, 133, 768]),
        ],
        inits,
    )
    return _save(graph, path)


def standing_person_locs() -> tuple[np.ndarray, np.ndarray]:
    """A plausible person in model-input pixels (288 x 384, COCO-WholeBody order), whole-pixel/half-
    pixel positions so the SimCC bins reproduce them exactly. All 133 scores 0.9."""
    body = np.array([
        [144, 60],  # 0 nose
        [150, 54], [138, 54],  # 1 L eye, 2 R eye
        [158, 58], [130, 58],  # 3 L ear, 4 R ear
        [170, 100], [118, 100],  # 5 L shoulder, 6 R shoulder
        [180, 150], [108, 150],  # 7 L elbow, 8 R elbow
        [184, 196], [104, 196],  # 9 L wrist, 10 R wrist
        [162, 200], [126, 200],  # 11 L hip, 12 R hip
        [164, 270], [124, 270],  # 13 L knee, 14 R knee
        [166, 336], [122, 336],  # 15 L ankle, 16 R ankle
    ], dtype=np.float64)
    feet = np.array([[166, 344], [170, 344], [164, 340], [122, 344], [118, 344], [124, 340]], np.float64)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face = np.stack([144 + 14 * np.cos(angles), 62 + 16 * np.sin(angles)], axis=1).round()
    left_hand = np.stack([184 + np.arange(21) % 5, 200 + np.arange(21) // 5 * 2], axis=1).astype(np.float64)
    right_hand = np.stack([104 - np.arange(21) % 5, 200 + np.arange(21) // 5 * 2], axis=1).astype(np.float64)
    locs = np.concatenate([body, feet, face, left_hand, right_hand])
    assert locs.shape == (133, 2)
    return locs, np.full(133, 0.9)



# One person in the 640x640 detector input; a 1280x960 image has ratio 0.5 so the box doubles.
KNOWN_PERSON_BOX = (200.0, 96.0, 360.0, 544.0)
