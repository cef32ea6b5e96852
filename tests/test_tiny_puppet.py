"""The shipped tiny puppet model (issue 14): it loads as package data, really animates held-out puppets, and the
smoke command runs it. Thresholds come from measured values (in each comment) with a margin; the held-out
puppets and motions (`puppet_evaluation.held_out_case`) were never used in training.

Measured on the shipped weights, 10 denoising steps, 8 frames, generation seed 0 (see docs/puppets.md for more
cases and seeds): MEASURED below.
"""

import configparser
import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusers_stableanimator import puppet_evaluation as E
from diffusers_stableanimator.cli import main
from diffusers_stableanimator.models import ArcFaceIResNet
from diffusers_stableanimator.pipeline_stableanimator import StableAnimatorPipeline
from diffusers_stableanimator.puppet_recognizer import CONFIG, evaluate_recognizer, held_out_identity_seeds
from diffusers_stableanimator.tiny_puppet import EXAMPLE, WEIGHTS, load_example, load_tiny_puppet, untrained_components

CASES = (0, 1)  # held-out puppets measured here (case 0 is the smoke example)
STEPS = 10


@pytest.fixture(scope="module")
def pipe():
    return load_tiny_puppet()


@pytest.fixture(scope="module")
def measured(pipe):
    """Figures of the trained model, the untrained one and repeating the reference, per case."""
    untrained = StableAnimatorPipeline(**{**untrained_components(0), "face_recognizer": pipe.face_recognizer})
    untrained.set_progress_bar_config(disable=True)
    figures = {"trained": [], "untrained": [], "repeat": [], "truth": []}
    frames = {}
    for index in CASES:
        case = E.held_out_case(index, 8, recognizer=pipe.face_recognizer)
        frames[index] = E.generate(pipe, case, STEPS, seed=0)
        figures["trained"].append(E.evaluate(frames[index], case, pipe.face_recognizer))
        figures["untrained"].append(E.evaluate(E.generate(untrained, case, STEPS, seed=0), case, pipe.face_recognizer))
        figures["repeat"].append(E.evaluate(E.repeat_reference(case), case, pipe.face_recognizer))
        figures["truth"].append(E.evaluate(case.truth, case, pipe.face_recognizer))
    return {name: E.mean_figures(values) for name, values in figures.items()}, frames


def test_shipped_weights_are_package_data():
    # Every shipped file matches a setup.cfg package_data pattern, so a non-editable install carries it.
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["diffusers_stableanimator"].replace("\n", ",").split(",") if p.strip()]
    package = WEIGHTS.parent.parent
    shipped = [p for folder in (WEIGHTS, EXAMPLE) for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "model_index.json" for p in shipped) and any(p.suffix == ".safetensors" for p in shipped)
    for path in shipped:
        relative = path.relative_to(package).as_posix()
        # fnmatch's * crosses "/", setuptools' does not: compare segment counts too
        assert any(fnmatch.fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns), relative
    assert sum(p.stat().st_size for p in shipped) < 12 * 2**20  # a few MB


def test_shipped_pipeline_has_the_puppet_recognizer(pipe):
    assert isinstance(pipe.face_recognizer, ArcFaceIResNet)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in pipe.face_recognizer.config.items() if k in CONFIG} == CONFIG
    assert pipe.vae_scale_factor == 4 and pipe.unet.dtype == torch.float32  # fp16 files, loaded as float32


def test_recognizer_tells_held_out_puppets_apart(pipe):
    # MEASURED_RECOGNIZER
    figures = evaluate_recognizer(pipe.face_recognizer, held_out_identity_seeds(20))
    assert figures["identification_accuracy"] >= RECOGNIZER_ACCURACY
    assert figures["cosine_gap"] >= RECOGNIZER_GAP


def test_trained_model_beats_untrained_and_repeating_the_reference(measured):
    # MEASURED_PIXELS
    figures, _ = measured
    trained, untrained, repeat = figures["trained"], figures["untrained"], figures["repeat"]
    for baseline in (untrained, repeat):
        assert trained["l1"] < baseline["l1"]
        assert trained["psnr"] > baseline["psnr"]
        assert trained["ssim"] > baseline["ssim"]
    assert trained["psnr"] > PSNR_FLOOR and trained["ssim"] > SSIM_FLOOR


def test_trained_model_follows_the_poses(measured):
    # MEASURED_POSE
    figures, _ = measured
    trained, repeat, truth = figures["trained"], figures["repeat"], figures["truth"]
    assert trained["pose_error_px"] < POSE_ERROR_PX
    assert trained["pose_error_px"] < repeat["pose_error_px"]
    assert trained["parts_missing"] < PARTS_MISSING


def test_smoke_animates_the_example_puppet(tmp_path, capsys):
    out = tmp_path / "smoke.gif"
    assert main(["smoke", "--frames", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Checking the install: the tiny puppet model") and "never saw along 2 poses" in lines[0]
    assert "tiny puppet StableAnimator pipeline: 2 frames of 64x64" in lines[1]
    from PIL import Image

    gif = Image.open(out)
    assert gif.size == (3 * 64, 64) and gif.n_frames == 2  # pose | generated | ground truth


def test_example_is_the_held_out_case():
    # The shipped example pictures are exactly held-out case 0 (so smoke shows a puppet never trained on).
    example = load_example(16)
    case = E.held_out_case(0, 16)
    assert np.array_equal(np.asarray(example["reference"]), case.video.frames[0])
    assert all(np.array_equal(np.asarray(p), q) for p, q in zip(example["poses"], case.video.pose_images[case.start:]))
    assert example["face_boxes"] == case.face_boxes and example["reference_face_box"] == case.reference_face_box
