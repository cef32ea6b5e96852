"""Fixtures: tiny ONNX models generated at test time (see onnx_builders.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx_builders import KNOWN_PERSON_BOX, make_pose_model, make_recognizer, make_scrfd, make_yolox, standing_person_locs


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def face_models(model_dir) -> Path:
    """An antelopev2-like folder: constant one-face detector + tiny recognizer."""
    folder = model_dir / "antelopev2"
    folder.mkdir()
    make_scrfd(folder / "scrfd_10g_bnkps.onnx")
    make_recognizer(folder / "glintr100.onnx")
    return folder


@pytest.fixture(scope="session")
def pose_models(model_dir) -> tuple[Path, Path]:
    """(yolox_l.onnx, dw-ll_ucoco_384.onnx) with one person and the standing-person keypoints."""
    folder = model_dir / "dwpose"
    folder.mkdir()
    det = make_yolox(folder / "yolox_l.onnx", [{"box": KNOWN_PERSON_BOX, "score": 0.9}])
    locs, scores = standing_person_locs()
    pose = make_pose_model(folder / "dw-ll_ucoco_384.onnx", locs, scores)
    return det, pose
