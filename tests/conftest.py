"""Shared fixtures: the tiny random pipeline comes from `diffusers_stableanimator.testing` (one builder for
tests, the smoke command and the CLI's `tiny-random` model); tiny ONNX face and pose models are generated at
test time by `onnx_builders.py`."""

import os
from pathlib import Path

import pytest
import torch
from onnx_builders import KNOWN_PERSON_BOX, make_pose_model, make_recognizer, make_scrfd, make_yolox, standing_person_locs

from diffusers_stableanimator.testing import synthetic_inputs, tiny_random_components, tiny_random_pipeline

if os.environ.get("PYTEST_XDIST_WORKER"):  # two test processes on the 2 cores: one thread each, for their children too
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


@pytest.fixture
def tiny_components():
    return tiny_random_components(seed=0)


@pytest.fixture
def tiny_pipe():
    return tiny_random_pipeline(seed=0)


@pytest.fixture
def inputs():
    """Factory: `inputs(num_frames)` -> (image, poses, face_embeds) at 64x64."""
    return synthetic_inputs


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
