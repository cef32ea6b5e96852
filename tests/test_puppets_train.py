"""examples/puppets/train_tiny.py: a few steps of each stage on a 2-video puppet dataset (in-process `main(argv)`)."""

import json

import numpy as np
import pytest
import torch
from example_scripts import load_example

from diffusers_stableanimator import StableAnimatorPipeline
from diffusers_stableanimator.errors import StableAnimatorError
from diffusers_stableanimator.puppets import render_video



@pytest.fixture(scope="module")
def recipe():
    return load_example("puppets/train_tiny.py")


@pytest.fixture(scope="module")
def run(recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_puppet") / "run"
    report = recipe.main(["--output-dir", str(out), "--videos", "2", "--frames", "8", "--num-frames", "4",
                          "--vae-steps", "2", "--vae-num-frames", "2", "--unet-steps", "2", "--seed", "0", "--threads", "1",
                          "--recognizer-steps", "2", "--recognizer-identities", "4", "--recognizer-held-out", "3"])
    return out, report


def test_recipe_runs_every_stage(run):
    out, report = run
    assert (out / "data" / "videos.txt").read_text().split() == ["puppet_00000", "puppet_00001"]
    assert report["vae_steps"] == 2 and report["unet_steps"] == 2 and report["recognizer_steps"] == 2
    assert report["recognizer_held_out"]["puppets"] == 3
    assert np.isfinite([report["vae_mse_last"], report["unet_loss_first"], report["unet_loss_last"]]).all()
    assert json.loads((out / "report.json").read_text())["unet_steps"] == 2
    assert not [p for p in out.iterdir() if ".partial" in p.name]


def test_trained_pipeline_loads_and_animates(run):
    out, report = run
    pipe = StableAnimatorPipeline.from_pretrained(out / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    base = StableAnimatorPipeline.from_pretrained(out / "base")
    # the VAE trained in stage 1 is the one shipped, with latents scaled to unit std
    assert pipe.vae.config.scaling_factor == pytest.approx(1.0 / report["latent_std"])
    for (name, a), b in zip(pipe.vae.state_dict().items(), base.vae.state_dict().values()):
        assert torch.equal(a, b), name
    # stage 3 trained the UNet (the base's UNet differs from the result's)
    assert any(not torch.equal(a, b) for a, b in zip(pipe.unet.state_dict().values(), base.unet.state_dict().values()))
    from PIL import Image

    video = render_video(11, 12, num_frames=5)
    embeds = torch.from_numpy(np.load(out / "data" / "puppet_00000" / "face_embedding.npy"))[None]
    frames = pipe(Image.fromarray(video.frames[0]), [Image.fromarray(p) for p in video.pose_images[1:]], face_embeds=embeds,
                  num_inference_steps=1, tile_size=4, tile_overlap=1, output_type="np",
                  generator=torch.Generator().manual_seed(0)).frames[0]
    assert np.asarray(frames).shape == (4, 64, 64, 3) and np.isfinite(frames).all()


def test_dataset_embeddings_are_the_recognizers(run):
    # face_embedding.npy of each video = the shipped recognizer on the face box of the video's first frame, as the
    # pipeline's own face optimisation computes a reference embedding (an independent crop-and-resize path).
    from PIL import Image

    from diffusers_stableanimator.face_optimization import reference_face_embedding
    from diffusers_stableanimator.models import ArcFaceIResNet
    from diffusers_stableanimator.puppets import video_seeds

    out, _ = run
    pipe = StableAnimatorPipeline.from_pretrained(out / "pipeline")
    assert isinstance(pipe.face_recognizer, ArcFaceIResNet)
    embeddings = []
    for index in range(2):
        video = render_video(*video_seeds(0, index), num_frames=8)
        x1, y1, x2, y2 = video.face_boxes[0]
        expected = reference_face_embedding(pipe.face_recognizer, Image.fromarray(video.frames[0]), (x1, y1, x2 + 1, y2 + 1))[0]
        stored = np.load(out / "data" / f"puppet_{index:05d}" / "face_embedding.npy")
        assert stored.shape == (512,) and stored.dtype == np.float32
        np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-4, atol=1e-4)
        embeddings.append(stored)
    assert not np.allclose(embeddings[0], embeddings[1])


def test_recipe_refuses_a_used_output_dir(recipe, run):
    out, _ = run
    with pytest.raises(StableAnimatorError, match="not empty"):
        recipe.main(["--output-dir", str(out), "--videos", "1", "--vae-steps", "1", "--unet-steps", "1"])
