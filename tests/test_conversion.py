"""Official checkpoints -> diffusers folder: round trip on tiny models, strictness, errors, model card, publishing.

The "official" files are torch.save'd state dicts of tiny random modules under the released names; the "SVD
folder" holds the tiny VAE / CLIP / stock UNet / scheduler saved as Stable Video Diffusion ships them.
"""

import json
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from diffusers import EulerDiscreteScheduler, UNetSpatioTemporalConditionModel

from diffusers_stableanimator import ArcFaceIResNet, FaceEncoder, PoseNet, StableAnimatorPipeline, StableAnimatorUNetModel
from diffusers_stableanimator import conversion
from diffusers_stableanimator.cli import main as cli_main
from diffusers_stableanimator.conversion import ConversionError, convert_official_checkpoint
from diffusers_stableanimator.testing import synthetic_inputs, tiny_random_components

TINY_HEADS = 4  # the tiny face encoder has 8-wide heads, so the 64-wide default does not apply
OUTPUT_ATOL = 5e-4  # frames in [0, 1]; 30x the load-path noise measured across CPUs (see the round-trip test)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """(official_dir, svd_dir, unconverted components). The official files sit in `Animation/`, as released."""
    root = tmp_path_factory.mktemp("sources")
    components = tiny_random_components(seed=0)
    svd = root / "svd"
    components["vae"].save_pretrained(svd / "vae")
    components["image_encoder"].save_pretrained(svd / "image_encoder")
    components["feature_extractor"].save_pretrained(svd / "feature_extractor")
    EulerDiscreteScheduler.from_config(components["scheduler"].config).save_pretrained(svd / "scheduler")
    unet_config = {k: v for k, v in components["unet"].config.items() if not k.startswith("_") and k != "num_face_tokens"}
    UNetSpatioTemporalConditionModel.from_config(unet_config).save_pretrained(svd / "unet")
    (svd / "model_index.json").write_text(json.dumps({
        "_class_name": "StableVideoDiffusionPipeline", "_diffusers_version": "0.24.0.dev0",
        "feature_extractor": ["transformers", "CLIPImageProcessor"], "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
    }))
    (svd / "LICENSE.md").write_text("SVD licence text\n")

    official = root / "official"
    (official / "Animation").mkdir(parents=True)
    for name in ("unet", "pose_net", "face_encoder"):
        torch.save(components[name].state_dict(), official / "Animation" / f"{name}.pth")
    # Some IResNet exports have no BatchNorm counters: the converter must accept that.
    recognizer = {k: v for k, v in components["face_recognizer"].state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(recognizer, official / "Animation" / "glintr100_torch.pth")
    return official, svd, components


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory):
    official, svd, _ = sources
    return convert_official_checkpoint(official, svd, tmp_path_factory.mktemp("converted") / "out", face_encoder_heads=TINY_HEADS)


def copy_official(sources, tmp_path) -> Path:
    official = tmp_path / "official"
    shutil.copytree(sources[0] / "Animation", official)
    return official


# ------------------------------------------------------------------------------------------------ round trip
def test_round_trip_reproduces_every_tensor_and_the_pipeline_output(sources, converted):
    _, _, components = sources
    pipe = StableAnimatorPipeline.from_pretrained(converted)
    for name in ("unet", "pose_net", "face_encoder", "face_recognizer", "vae", "image_encoder"):
        original, loaded = components[name].state_dict(), getattr(pipe, name).state_dict()
        assert set(loaded) == set(original), name
        for key, tensor in original.items():
            assert torch.equal(loaded[key], tensor), f"{name}.{key}"
    assert type(pipe.scheduler).__name__ == "HJBEulerScheduler"
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(pipe.scheduler.config) == public(components["scheduler"].config)

    # Weights are equal to the bit (above); outputs are not: loaded parameters are views into the memory-mapped
    # safetensors file, and some CPUs' BLAS rounds products on such (unaligned) weights differently in the last
    # bits (1.1-1.6e-5 measured on the tiny pipeline). A real change (another fps) moves the frames by ~4e-2.
    reference = StableAnimatorPipeline(**components)
    image, poses, face_embeds = synthetic_inputs(4)

    def frames(p, fps=7):
        p.set_progress_bar_config(disable=True)
        return p(image, poses, face_embeds=face_embeds, num_inference_steps=2, tile_size=4, tile_overlap=1, fps=fps,
                 generator=torch.Generator().manual_seed(0), output_type="np").frames

    expected = frames(reference)
    np.testing.assert_allclose(frames(pipe), expected, atol=OUTPUT_ATOL, rtol=0)
    assert np.abs(frames(reference, fps=8) - expected).max() > 20 * OUTPUT_ATOL  # the tolerance can see a real change


def test_from_official_converts_in_memory_from_a_folder_or_the_release_repo(sources, tmp_path, monkeypatch):
    official, svd, components = sources
    monkeypatch.chdir(tmp_path)
    pipe = StableAnimatorPipeline.from_official(official, svd, face_encoder_heads=TINY_HEADS)
    for name in ("unet", "pose_net", "face_encoder", "face_recognizer", "vae", "image_encoder"):
        original, loaded = components[name].state_dict(), getattr(pipe, name).state_dict()
        assert set(loaded) == set(original), name
        assert all(torch.equal(loaded[key], tensor) for key, tensor in original.items()), name
    assert list(tmp_path.iterdir()) == []  # nothing written

    with mock.patch("huggingface_hub.snapshot_download", return_value=str(official)) as download:
        half = StableAnimatorPipeline.from_official("FrancisRing/StableAnimator", svd, dtype=torch.float16, face_encoder_heads=TINY_HEADS)
    assert download.call_args.args == ("FrancisRing/StableAnimator",)
    assert download.call_args.kwargs["allow_patterns"] == ["Animation/*.pth"]  # only the release's weights
    assert half.unet.dtype == torch.float16
    loaded = half.pose_net.state_dict()
    assert all(torch.equal(loaded[key], tensor.half()) for key, tensor in components["pose_net"].state_dict().items())
    with pytest.raises(ConversionError, match="Missing unet.pth, pose_net.pth, face_encoder.pth"):
        StableAnimatorPipeline.from_official(tmp_path, svd)


def test_output_folder_is_safetensors_with_our_classes_licence_and_provenance(sources, converted):
    official = sources[0] / "Animation"
    files = sorted(p.relative_to(converted).as_posix() for p in converted.rglob("*") if p.is_file())
    weights = [f for f in files if not f.endswith((".json", ".md"))]
    assert weights and all(f.endswith(".safetensors") for f in weights), weights
    index = json.loads((converted / "model_index.json").read_text())
    assert index["unet"] == ["diffusers_stableanimator", "StableAnimatorUNetModel"]
    assert index["pose_net"] == ["diffusers_stableanimator", "PoseNet"]
    assert index["face_encoder"] == ["diffusers_stableanimator", "FaceEncoder"]
    assert index["face_recognizer"] == ["diffusers_stableanimator", "ArcFaceIResNet"]
    assert index["scheduler"] == ["diffusers_stableanimator", "HJBEulerScheduler"]
    assert (converted / "LICENSE.md").read_text() == "SVD licence text\n"
    provenance = json.loads((converted / conversion.PROVENANCE_FILE).read_text())
    assert provenance["source_files"]["unet.pth"]["sha256"] == conversion.sha256_of(official / "unet.pth")
    assert provenance["configs"]["face_encoder"]["heads"] == TINY_HEADS
    assert not list(converted.parent.glob(".out.*")), "staging folders must not be left behind"


def test_without_recognizer_file_the_pipeline_has_no_face_recognizer(sources, tmp_path):
    official = copy_official(sources, tmp_path)
    (official / "glintr100_torch.pth").unlink()
    out = convert_official_checkpoint(official, sources[1], tmp_path / "out", face_encoder_heads=TINY_HEADS, dtype="bf16")
    assert json.loads((out / "model_index.json").read_text()).get("face_recognizer") in (None, [None, None])
    pipe = StableAnimatorPipeline.from_pretrained(out, dtype=torch.bfloat16)
    assert pipe.face_recognizer is None
    assert pipe.unet.dtype == torch.bfloat16 and pipe.image_encoder.dtype == torch.bfloat16
    original = sources[2]["pose_net"].state_dict()["conv_layers.2.weight"].to(torch.bfloat16)
    assert torch.equal(pipe.pose_net.state_dict()["conv_layers.2.weight"], original)


# ------------------------------------------------------------------------------------------------ config inference
def test_full_size_configs_are_inferred_from_tensor_shapes():
    with torch.device("meta"):
        face = FaceEncoder()
        iresnet = ArcFaceIResNet()
        unet = StableAnimatorUNetModel()
    pose = PoseNet()
    assert conversion.infer_pose_net_config(pose.state_dict()) == {
        "conditioning_channels": 3, "block_out_channels": [16, 32, 64, 128], "out_channels": 320}
    assert conversion.infer_face_encoder_config(face.state_dict()) == {
        "id_embeddings_dim": 512, "clip_embeddings_dim": 1024, "cross_attention_dim": 1024, "num_tokens": 4,
        "depth": 4, "dim_head": 64, "heads": 16, "ff_mult": 4}
    assert conversion.infer_arcface_config(iresnet.state_dict()) == {
        "layers": [3, 13, 30, 3], "block_out_channels": [64, 128, 256, 512], "num_features": 512, "in_channels": 3}
    assert len(pose.state_dict()) == 19 and len(face.state_dict()) == 56 and len(iresnet.state_dict()) == 925
    assert len(unet.state_dict()) == 1460  # the released unet.pth layout: 1428 SVD keys + 32 ID-Adapter keys


def test_face_encoder_heads_must_be_given_when_not_64_wide(sources):
    with pytest.raises(ConversionError, match="--face-encoder-heads"):
        conversion.infer_face_encoder_config(sources[2]["face_encoder"].state_dict())


def test_recognizer_with_batchnorm_counters_loads_too(sources):
    model = sources[2]["face_recognizer"]
    config = conversion.infer_arcface_config(model.state_dict())
    loaded = conversion.load_strict(ArcFaceIResNet, config, dict(model.state_dict()), "glintr100_torch.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------------ errors
def test_missing_file_names_it_and_the_layout(sources, tmp_path):
    official = copy_official(sources, tmp_path)
    (official / "face_encoder.pth").unlink()
    with pytest.raises(ConversionError, match=r"face_encoder\.pth.*Animation"):
        convert_official_checkpoint(official, sources[1], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 6000000000\n", r"git-lfs pointer.*git lfs pull"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", r"HTML page.*hf download"),
        (b"PK\x03\x04 truncated", r"could not be read"),
    ],
)
def test_broken_downloads_are_explained(sources, tmp_path, content, message):
    official = copy_official(sources, tmp_path)
    (official / "unet.pth").write_bytes(content)
    with pytest.raises(ConversionError, match=message):
        convert_official_checkpoint(official, sources[1], tmp_path / "out", face_encoder_heads=TINY_HEADS)


def test_wrong_key_set_lists_missing_and_unexpected_keys(sources, tmp_path):
    official = copy_official(sources, tmp_path)
    state_dict = sources[2]["pose_net"].state_dict()
    del state_dict["final_proj.bias"]
    state_dict["final_proj.extra"] = torch.zeros(1)
    torch.save(state_dict, official / "pose_net.pth")
    with pytest.raises(ConversionError) as error:
        convert_official_checkpoint(official, sources[1], tmp_path / "out", face_encoder_heads=TINY_HEADS)
    assert "1 missing: final_proj.bias" in str(error.value) and "1 unexpected: final_proj.extra" in str(error.value)


def test_svd_unet_instead_of_stableanimator_unet_is_refused(sources, tmp_path):
    official = copy_official(sources, tmp_path)
    state_dict = {k: v for k, v in sources[2]["unet"].state_dict().items() if ".processor.id_to_" not in k}
    torch.save(state_dict, official / "unet.pth")
    with pytest.raises(ConversionError, match=r"unet\.pth does not match.*missing: .*processor\.id_to_k\.weight"):
        convert_official_checkpoint(official, sources[1], tmp_path / "out", face_encoder_heads=TINY_HEADS)


def test_shape_mismatch_names_the_key_and_both_shapes(sources, tmp_path):
    official = copy_official(sources, tmp_path)
    state_dict = sources[2]["face_encoder"].state_dict()
    state_dict["fusion_model.norm_out.weight"] = torch.ones(33)
    torch.save(state_dict, official / "face_encoder.pth")
    with pytest.raises(ConversionError, match=r"fusion_model\.norm_out\.weight has shape \(33,\) in the checkpoint but \(32,\)"):
        convert_official_checkpoint(official, sources[1], tmp_path / "out", face_encoder_heads=TINY_HEADS)


def test_incomplete_svd_folder_is_refused(sources, tmp_path):
    svd = tmp_path / "svd"
    shutil.copytree(sources[1], svd)
    shutil.rmtree(svd / "image_encoder")
    with pytest.raises(ConversionError, match=r"lacks image_encoder/"):
        convert_official_checkpoint(sources[0], svd, tmp_path / "out", face_encoder_heads=TINY_HEADS)


def test_svd_repo_id_downloads_only_what_conversion_reads(sources, tmp_path):
    with mock.patch("huggingface_hub.snapshot_download", return_value=str(sources[1])) as download:
        path, source = conversion.resolve_svd("stabilityai/stable-video-diffusion-img2vid-xt")
    assert path == sources[1] and source["source"] == "hub"
    patterns = download.call_args.kwargs["allow_patterns"]
    assert "unet/config.json" in patterns and not any(p.endswith(".bin") or "svd_xt" in p or "fp16" in p for p in patterns)
    with mock.patch("huggingface_hub.snapshot_download", side_effect=OSError("offline")):
        with pytest.raises(ConversionError, match="neither|downloading it from the Hub failed"):
            conversion.resolve_svd("someone/missing-repo")


def test_failed_verification_leaves_the_old_output_untouched_and_no_staging(sources, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / conversion.PROVENANCE_FILE).write_text("old")  # an earlier conversion, which --overwrite may replace
    (out / "model_index.json").write_text("old")
    monkeypatch.setattr(conversion, "verify_converted", mock.Mock(side_effect=ConversionError("boom")))
    with pytest.raises(ConversionError, match="boom"):
        convert_official_checkpoint(sources[0], sources[1], out, face_encoder_heads=TINY_HEADS, overwrite=True)
    assert (out / "model_index.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_convert_end_to_end_with_variant_and_overwrite(sources, tmp_path, capsys):
    official, svd, components = sources
    out = tmp_path / "out"
    args = ["convert", "--official-dir", str(official), "--svd", str(svd), "--output", str(out),
            "--face-encoder-heads", str(TINY_HEADS), "--variant", "fp16"]
    assert cli_main(args) == 0
    assert "converted and verified" in capsys.readouterr().out
    pipe = StableAnimatorPipeline.from_pretrained(out, variant="fp16", dtype=torch.float16)
    original = components["unet"].state_dict()
    for key, tensor in pipe.unet.state_dict().items():
        assert torch.equal(tensor, original[key].half()), key
    assert StableAnimatorPipeline.from_pretrained(out).image_encoder.dtype == torch.float32  # main files stay fp32

    (out / "marker.txt").write_text("the user's")
    assert cli_main(args) == 1  # refused: the output exists
    assert "already exists" in capsys.readouterr().err and (out / "marker.txt").exists()
    assert cli_main(args + ["--overwrite"]) == 1  # refused still: the folder holds a file convert does not write
    assert "marker.txt" in capsys.readouterr().err and (out / "marker.txt").read_text() == "the user's"
    (out / "marker.txt").unlink()
    (out / "unet" / "config.json").write_text("{}")  # an earlier conversion's file: replaced
    assert cli_main(args + ["--overwrite"]) == 0
    assert json.loads((out / "unet" / "config.json").read_text())["_class_name"] == "StableAnimatorUNetModel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_refuses_nested_user_files_and_links(tmp_path):
    # --overwrite replaces a folder convert wrote; a user's file deeper inside it, or a link (whose target may be
    # anyone's), makes it someone else's folder.
    official, svd, out = tmp_path / "official", tmp_path / "svd", tmp_path / "out"
    for folder in (official, svd, out / "unet"):
        folder.mkdir(parents=True)
    (out / conversion.PROVENANCE_FILE).write_text("{}")
    (out / "unet" / "config.json").write_text("{}")
    conversion.check_output(out, official, svd, overwrite=True)  # only folders and files convert writes: no error
    (out / "unet" / "notes").mkdir()  # a .txt inside a component folder would be convert's; inside a folder of its own it is not
    (out / "unet" / "notes" / "mine.txt").write_text("the user's")
    with pytest.raises(ConversionError, match=r"\(unet/notes\)"):
        conversion.check_output(out, official, svd, overwrite=True)
    (out / "unet" / "notes" / "mine.txt").unlink()
    (out / "unet" / "notes").rmdir()
    (out / "unet" / "config.json").unlink()
    (official / "users.json").write_text("the user's")
    (out / "unet" / "config.json").symlink_to(official / "users.json")  # a file convert would write, but a link
    with pytest.raises(ConversionError, match=r"unet/config.json"):
        conversion.check_output(out, official, svd, overwrite=True)


# ------------------------------------------------------------------------------------------------ model card / Hub
def test_model_card_renders_with_valid_metadata(converted):
    provenance = json.loads((converted / conversion.PROVENANCE_FILE).read_text())
    card = conversion.render_model_card(provenance, repo_id="someone/stableanimator")
    front_matter, body = conversion.split_front_matter(card)
    metadata = yaml.safe_load(front_matter)
    assert metadata["library_name"] == "diffusers" and metadata["pipeline_tag"] == "image-to-video"
    assert metadata["base_model"] == "stabilityai/stable-video-diffusion-img2vid-xt"
    assert metadata["license"] == "other" and metadata["license_name"] and metadata["license_link"].startswith("https://")
    assert "stableanimator" in metadata["tags"]
    assert 'from_pretrained("someone/stableanimator"' in body
    assert provenance["source_files"]["unet.pth"]["sha256"] in body and provenance["package_version"] in body
    assert "512x512 and 576x1024" in body and "non-commercial research" in body
    assert "${" not in card


def test_push_to_hub_creates_the_repo_and_uploads_the_folder_with_the_card(converted, tmp_path):
    folder = tmp_path / "folder"
    shutil.copytree(converted, folder)
    seen = {}

    def upload_folder(**kwargs):
        seen["readme"] = (Path(kwargs["folder_path"]) / "README.md").read_text()
        return "commit-info"

    with mock.patch("huggingface_hub.HfApi") as api_class:
        api = api_class.return_value
        api.upload_folder.side_effect = upload_folder
        assert conversion.push_to_hub(folder, "someone/stableanimator", private=True) == "commit-info"
    api.create_repo.assert_called_once_with(repo_id="someone/stableanimator", private=True, exist_ok=True, repo_type="model")
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == "someone/stableanimator" and Path(kwargs["folder_path"]) == folder
    assert yaml.safe_load(conversion.split_front_matter(seen["readme"])[0])["library_name"] == "diffusers"
    assert 'from_pretrained("someone/stableanimator"' in seen["readme"]

    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with mock.patch("huggingface_hub.HfApi") as api_class, pytest.raises(ConversionError, match="safetensors only"):
        conversion.push_to_hub(folder, "someone/stableanimator")
    api_class.return_value.upload_folder.assert_not_called()


def test_cli_push_to_hub_publishes_after_converting(sources, tmp_path):
    official, svd, _ = sources
    with mock.patch.object(conversion, "convert_official_checkpoint", return_value=tmp_path) as convert:
        assert cli_main(["convert", "--official-dir", str(official), "--svd", str(svd), "--output", str(tmp_path / "o"),
                         "--push-to-hub", "someone/repo", "--private"]) == 0
    assert convert.call_args.kwargs["push_to_hub"] == "someone/repo" and convert.call_args.kwargs["private"] is True


def test_verification_fails_on_a_weight_corrupted_in_value_with_the_same_shape(sources, converted, tmp_path):
    from safetensors.torch import load_file, save_file

    official, _, _ = sources
    references = {"pose_net": conversion.load_official_state_dict(official / "Animation" / "pose_net.pth")}
    folder = tmp_path / "copy"
    shutil.copytree(converted, folder)
    conversion.verify_converted(folder, references, "fp32")  # control: the intact folder verifies

    weights = folder / "pose_net" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    key = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] += 0.5  # same shape and dtype, one value changed
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=f"pose_net.{key}"):
        conversion.verify_converted(folder, references, "fp32")


def test_cli_convert_push_to_hub_really_publishes_the_output(sources, tmp_path, capsys):
    official, svd, _ = sources
    out = tmp_path / "out"
    with mock.patch("huggingface_hub.HfApi") as api_class:
        assert cli_main(["convert", "--official-dir", str(official), "--svd", str(svd), "--output", str(out),
                         "--face-encoder-heads", str(TINY_HEADS), "--push-to-hub", "someone/repo"]) == 0
    assert "published to https://huggingface.co/someone/repo" in capsys.readouterr().out
    api = api_class.return_value
    api.create_repo.assert_called_once()
    assert api.create_repo.call_args.kwargs["repo_id"] == "someone/repo"
    api.upload_folder.assert_called_once()
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == "someone/repo" and Path(kwargs["folder_path"]).resolve() == out.resolve()
    assert (out / "model_index.json").is_file()
