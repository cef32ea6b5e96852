"""The shipped tiny puppet model (issue 14): it loads as package data, really animates held-out puppets, and the
smoke command runs it. Thresholds come from measured values (in each comment) with a margin; the held-out
puppets and motions (`puppet_evaluation.held_out_case`) were never used in training.

Measured on the shipped weights, held-out puppets 0-5, 10 denoising steps, 8 frames, generation seed 0 (docs/puppets.md
has the same puppets with 2 seeds): the values are in each test's comment.
"""

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
from diffusers_stableanimator.tiny_puppet import (EXAMPLE, THICK_PASTEL_LORA, WEIGHTS, load_example, load_tiny_puppet,
                                                 untrained_components)

CASES = tuple(range(6))  # held-out puppets measured here (case 0 is the smoke example)
# Measured on the shipped model and on two more runs of the recipe (see the tests): pose 7.8 / 7.8 / 7.9 px, parts
# missing 0.05 / 0.18 / 0.38, CSIM gain +0.22 / +0.15 / +0.21.
POSE_ERROR_PX, PARTS_MISSING, CSIM_GAIN = 10.0, 0.5, 0.08
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
    # Read as setuptools reads it (a multi-line value once broke every pattern, model cards included).
    from setuptools.config.setupcfg import read_configuration

    config = read_configuration(Path(__file__).resolve().parents[1] / "setup.cfg")
    patterns = config["options"]["package_data"]["diffusers_stableanimator"]
    package = WEIGHTS.parent.parent
    shipped = [p for folder in (WEIGHTS, EXAMPLE, THICK_PASTEL_LORA) for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "model_index.json" for p in shipped) and any(p.suffix == ".safetensors" for p in shipped)
    assert any(p.parent == THICK_PASTEL_LORA for p in shipped)
    for path in shipped:
        relative = path.relative_to(package).as_posix()
        # fnmatch's * crosses "/", setuptools' does not: compare segment counts too
        assert any(fnmatch.fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns), relative
    assert sum(p.stat().st_size for p in shipped) < 12 * 2**20  # a few MB


def test_shipped_pipeline_has_the_puppet_recognizer(pipe):
    assert isinstance(pipe.face_recognizer, ArcFaceIResNet)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in pipe.face_recognizer.config.items() if k in CONFIG} == CONFIG
    assert pipe.vae_scale_factor == 4 and pipe.unet.dtype == torch.float32  # fp16 files, loaded as float32


def test_shipped_weights_have_the_recipes_architecture(pipe):
    # The "untrained" baseline below and the recipe both build `untrained_components`: the shipped tensors must fit
    # them exactly (a recipe change without retraining, e.g. the UNet's channels, fails here).
    fresh = untrained_components(0)
    for name in ("unet", "vae", "pose_net", "face_encoder", "image_encoder"):
        shipped = {k: tuple(v.shape) for k, v in getattr(pipe, name).state_dict().items()}
        assert shipped == {k: tuple(v.shape) for k, v in fresh[name].state_dict().items()}, name


def test_recognizer_tells_held_out_puppets_apart(pipe):
    # Measured by the recipe on 50 unseen puppets: identification 1.00, cosine same 0.921, different 0.025 (gap 0.896).
    figures = evaluate_recognizer(pipe.face_recognizer, held_out_identity_seeds(20))
    assert figures["identification_accuracy"] >= 0.9
    assert figures["cosine_gap"] >= 0.7


def test_trained_model_beats_the_untrained_one_and_a_still_copy_on_psnr_star_and_ssim(measured):
    # Measured (means of cases 0-5, seed 0): trained L1 0.0055, PSNR* 17.58, SSIM 0.651; untrained 0.0109, 13.04,
    # 0.080, worse on all three in every case; repeating the reference frame 0.0035, 17.07, 0.635. The trained model
    # beats the still copy on PSNR* in 5 of 6 cases and on SSIM in 4.
    # Two more runs of the recipe (not shipped) pass every test here too: --seed 1 (one thread) 0.0051, 18.11, 0.662;
    # pose 7.8 px with 18% missing; face optimisation on case 0 -0.026 -> 0.127. --seed 2 (two threads) 0.0053, 18.22,
    # 0.668; 7.9 px with 38% missing; 0.295 -> 0.503 (docs/puppets.md).
    # Not asserted because it does not hold: it does NOT beat the copy on L1 and DisCo's PSNR (0.0055 vs 0.0035,
    # 28.7 vs 34.5), which reward exactly equal pixels (a still background is exact in the copy). The VAE alone
    # beats the copy on L1 (its reconstruction of the truth: 0.0025); the UNet's error on the background is what is
    # left (docs/puppets.md).
    figures, _ = measured
    trained, untrained, repeat = figures["trained"], figures["untrained"], figures["repeat"]
    assert trained["l1"] < 0.8 * untrained["l1"]
    assert trained["psnr"] > untrained["psnr"] and trained["psnr_star"] > untrained["psnr_star"] + 2.0
    assert trained["ssim"] > untrained["ssim"] + 0.3
    assert trained["psnr_star"] > repeat["psnr_star"] and trained["ssim"] > repeat["ssim"]


def test_trained_model_draws_the_puppets_parts_near_the_poses(measured):
    # Measured (means of cases 0-5, seed 0): trained 7.8 px with 5% of (frame, part) colours missing; untrained
    # 14.0 px, 3%; repeating the reference 7.3 px; the ground truth 1.5-3 px (parts occlude one another).
    # The trained model moves the puppet with the poses, closer than the untrained model in every case, nearly as
    # close on average as a still copy of the reference is to the target (6 cases x 2 seeds: 8.3 against 7.3 px).
    # A part counts as missing when no pixel is within 40 levels of its colour: how many are missing varies between
    # runs of the recipe with how vivid they paint (5%, 18%, 38%; the 38% run paints the palest puppets).
    figures, _ = measured
    trained, untrained = figures["trained"], figures["untrained"]
    assert trained["pose_error_px"] < POSE_ERROR_PX and trained["pose_error_px"] < untrained["pose_error_px"]
    assert trained["parts_missing"] < PARTS_MISSING


def test_face_optimization_raises_puppet_csim(pipe, measured):
    # Measured (6 cases x 2 seeds, examples/puppets/evaluate_tiny.py): CSIM 0.135 off -> 0.345 on, raised in 12 of 12
    # runs (+0.145 to +0.318), at 3.4x the time (2.5 s -> 8.4 s per 8-frame video, one thread). Here case 0, seed 0:
    # 0.164 -> 0.381 (the seed-1 recipe run: -0.026 -> 0.127).
    case = E.held_out_case(0, 8, recognizer=pipe.face_recognizer)
    off = E.csim(pipe.face_recognizer, measured[1][0], case)
    on = E.csim(pipe.face_recognizer, E.generate(pipe, case, STEPS, seed=0, face_optimization=True), case)
    assert on > off + CSIM_GAIN


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


def test_animate_loads_tiny_puppet_by_name():
    from diffusers_stableanimator.animate import check_model
    from diffusers_stableanimator.animator import TINY_PUPPET, load_pipeline

    check_model(TINY_PUPPET)  # a name, not a folder: no error
    said = []
    pipe = load_pipeline(TINY_PUPPET, torch.float32, say=said.append)
    assert isinstance(pipe.face_recognizer, ArcFaceIResNet) and "tiny puppet model" in said[0]
    half = load_pipeline(TINY_PUPPET, torch.bfloat16, say=said.append)
    assert half.unet.dtype == torch.bfloat16
    from diffusers_stableanimator.animator import Animator
    from diffusers_stableanimator.preprocessing import render_pose_small

    animator = Animator.load(TINY_PUPPET, device="cpu", say=said.append)
    assert animator.pose_renderer is render_pose_small and animator.sizes == [(64, 64), (64, 128)]


def test_animate_command_gives_the_measured_pipelines_frames(pipe, tmp_path, capsys):
    # A whole `animate --model tiny-puppet` run (default --memory balanced) on held-out case 0 gives the frames that the
    # pipeline measured above gives for the same inputs: no face models here, so a zero face embedding (which moves
    # the figures of cases 0-5 by 0.02 dB PSNR*). Measured difference 0 levels. Decoded in the preset's 4-frame
    # chunks instead, as it once was, frames were up to 36 levels off and PSNR* 0.2 dB lower on cases 0-5.
    from PIL import Image

    case = E.held_out_case(0, 8, recognizer=pipe.face_recognizer)
    case.reference.save(tmp_path / "ref.png")
    (tmp_path / "poses").mkdir()
    for i, pose in enumerate(case.poses):
        pose.save(tmp_path / "poses" / f"frame_{i}.png")
    assert main(["animate", "--model", "tiny-puppet", "--image", str(tmp_path / "ref.png"), "--poses", str(tmp_path / "poses"),
                 "--out", str(tmp_path / "out.mp4"), "--frames-dir", str(tmp_path / "frames"), "--allow-no-face",
                 "--steps", str(STEPS), "--seed", "0", "--device", "cpu"]) == 0
    assert "tiny puppet model" in capsys.readouterr().out
    frames = [np.asarray(Image.open(tmp_path / "frames" / f"frame_{i}.png")) for i in range(8)]
    expected = pipe(case.reference, case.poses, face_embeds=np.zeros(512, np.float32), num_inference_steps=STEPS,
                    generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    expected = np.clip(np.round(expected * 255), 0, 255).astype(np.int32)
    assert max(np.abs(f.astype(np.int32) - e).max() for f, e in zip(frames, expected)) <= 2


def test_evaluation_script_refuses_a_folder_with_files(tmp_path):
    from diffusers_stableanimator.errors import StableAnimatorError
    from example_scripts import load_example as load_script

    (tmp_path / "report.json").write_text("mine")
    with pytest.raises(StableAnimatorError, match="is not empty"):
        load_script("puppets/evaluate_tiny.py").main(["--out", str(tmp_path), "--cases", "1"])
    assert (tmp_path / "report.json").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_ship_records_the_model_name_not_the_training_folder(tmp_path):
    # The configs of a pipeline loaded from a folder record that folder; shipped ones must say `tiny-puppet`, so
    # that the package holds no path of the machine that trained it. The example is written beside it.
    import json

    from diffusers_stableanimator.puppet_recognizer import train_recognizer
    from diffusers_stableanimator.tiny_puppet import TINY_PUPPET, ship

    trained = tmp_path / "run" / "pipeline"
    recognizer, _ = train_recognizer(0, identities=4, motions=1, steps=1, batch_size=4)
    StableAnimatorPipeline(**{**untrained_components(0), "face_recognizer": recognizer}).save_pretrained(trained)
    ship(trained, weights=tmp_path / "weights", example=tmp_path / "example")
    configs = [p for p in (tmp_path / "weights").rglob("*.json")]
    assert len(configs) >= 6
    for path in configs:
        text = path.read_text()
        assert str(tmp_path) not in text, path
        if path.name != "model_index.json" and "_name_or_path" in json.loads(text):
            assert json.loads(text)["_name_or_path"] == TINY_PUPPET, path
    assert StableAnimatorPipeline.from_pretrained(str(tmp_path / "weights")).face_recognizer is not None
    assert (tmp_path / "example" / "example.json").is_file()
