"""examples/train_stableanimator.py end to end on the tiny random pipeline (in-process `main(argv)`)."""

import numpy as np
import pytest
import torch

from diffusers_stableanimator import StableAnimatorPipeline
from diffusers_stableanimator.testing import synthetic_inputs, tiny_random_pipeline


def common_args(pipeline_dir, data, output_dir, steps):
    return [
        "--pretrained-model", str(pipeline_dir), "--train-data", str(data), "--output-dir", str(output_dir),
        "--width", "64", "--height", "64", "--num-frames", "4", "--frame-rate", "1", "--num-workers", "0",
        "--max-train-steps", str(steps), "--learning-rate", "1e-3", "--seed", "0", "--report-to", "none",
    ]


def run_pipe(pipe, seed=0):
    image, poses, face_embeds = synthetic_inputs(4)
    return pipe(image, poses, face_embeds=face_embeds, num_inference_steps=2, tile_size=4, tile_overlap=1,
                output_type="np", generator=torch.Generator().manual_seed(seed)).frames[0]


@pytest.fixture(scope="module")
def full_run(train_script, tiny_pipeline_dir, video_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    args = common_args(tiny_pipeline_dir, video_dataset, out, 4) + [
        "--overfit-one-batch", "--checkpointing-steps", "2", "--validation-steps", "4",
        "--validation-inference-steps", "1", "--validation-frames", "4", "--drop-face-and-pose-with-clip",
    ]
    return out, train_script.main(args)


def test_full_training_loss_is_finite_and_decreases(full_run):
    _, result = full_run
    losses = result["losses"]
    assert result["global_step"] == 4 and len(losses) == 4 and np.isfinite(losses).all()
    assert losses[-1] < losses[0]


def test_full_training_output_loads_and_runs(full_run, tiny_pipeline_dir):
    out, _ = full_run
    assert (out / "validation" / "step_4.gif").is_file()
    pipe = StableAnimatorPipeline.from_pretrained(out)
    base = StableAnimatorPipeline.from_pretrained(tiny_pipeline_dir)
    trained = dict(pipe.unet.named_parameters())
    name = next(n for n in trained if "attentions" in n and n.endswith("to_q.weight"))
    assert not torch.equal(trained[name], dict(base.unet.named_parameters())[name])  # attention weights trained
    frozen = "conv_in.weight"
    assert torch.equal(trained[frozen], dict(base.unet.named_parameters())[frozen])  # the rest frozen
    pipe.set_progress_bar_config(disable=True)
    assert np.isfinite(run_pipe(pipe)).all()


def test_resume_latest_continues_from_the_saved_step(full_run, train_script, tiny_pipeline_dir, video_dataset):
    out, _ = full_run
    (out / "checkpoint-last").mkdir()  # the official script's folder name crashed `latest`; it is ignored
    assert [step for step, _ in train_script.list_checkpoints(out)] == [2, 4]
    result = train_script.main(common_args(tiny_pipeline_dir, video_dataset, out, 5) + [
        "--resume-from-checkpoint", "latest", "--checkpointing-steps", "100", "--validation-steps", "0",
    ])
    assert result["first_step"] == 4 and result["global_step"] == 5 and len(result["losses"]) == 1


def check_lora_outputs(out, base):
    """The LoRA covers to_q/to_k/to_v/to_out.0 of every UNet attention (docs/training.md); the ID-Adapter and PoseNet trained."""
    from diffusers.models.attention_processor import Attention
    from safetensors.torch import load_file

    lora = load_file(str(out / "pytorch_lora_weights.safetensors"))
    wrapped = {key[len("unet."):key.index(".lora.")] for key in lora}  # diffusers naming: <module>.lora.down/up.weight
    assert {key[key.index(".lora.") + 1:] for key in lora} == {"lora.down.weight", "lora.up.weight"}
    documented = ("to_q", "to_k", "to_v", "to_out.0")
    assert wrapped == {f"{name}.{t}" for name, m in base.unet.named_modules() if isinstance(m, Attention) for t in documented}
    id_adapter, unet = load_file(str(out / "id_adapter.safetensors")), _params(base.unet)
    assert set(id_adapter) == {name for name in unet if ".processor.id_to_" in name} and id_adapter
    assert all(not torch.equal(value, unet[name]) for name, value in id_adapter.items())
    pose_net, base_pose_net = _params(type(base.pose_net).from_pretrained(out / "pose_net")), _params(base.pose_net)
    assert all(not torch.equal(pose_net[name], base_pose_net[name]) for name in base_pose_net)


def test_lora_training_saves_an_adapter_that_the_pipeline_loads(train_script, tiny_pipeline_dir, video_dataset, tmp_path):
    result = train_script.main(common_args(tiny_pipeline_dir, video_dataset, tmp_path, 4) + [
        "--lora-rank", "4", "--train-id-adapter", "--train-pose-net", "--gradient-checkpointing",
        "--overfit-one-batch", "--checkpointing-steps", "100", "--validation-steps", "0", "--learning-rate", "3e-3",
    ])
    assert np.isfinite(result["losses"]).all() and result["losses"][-1] < result["losses"][0]
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file() and (tmp_path / "id_adapter.safetensors").is_file()
    assert (tmp_path / "pose_net").is_dir() and not (tmp_path / "face_encoder").exists()
    check_lora_outputs(tmp_path, StableAnimatorPipeline.from_pretrained(tiny_pipeline_dir))

    pipe = tiny_random_pipeline(seed=0)
    before = run_pipe(pipe)
    pipe.load_lora_weights(tmp_path, adapter_name="trained")
    assert pipe.get_list_adapters() == {"unet": ["trained"]}
    with_lora = run_pipe(pipe)
    assert np.isfinite(with_lora).all() and not np.allclose(before, with_lora)

    pipe.fuse_lora()
    assert np.allclose(run_pipe(pipe), with_lora, atol=1e-4)
    pipe.unfuse_lora()
    pipe.set_adapters("trained", 0.0)
    assert np.allclose(run_pipe(pipe), before, atol=1e-4)
    pipe.set_adapters("trained", 1.0)

    assert sorted(pipe.load_finetuned_modules(tmp_path)) == ["id_adapter", "pose_net"]
    assert not np.allclose(run_pipe(pipe), with_lora)


def test_components_that_do_not_fit_are_refused_before_training(train_script, video_dataset, tmp_path):
    from diffusers_stableanimator.models import PoseNet

    pipe = tiny_random_pipeline(seed=0)
    config = {k: v for k, v in pipe.pose_net.config.items() if not k.startswith("_")}
    pipe.register_modules(pose_net=PoseNet(**{**config, "out_channels": 2 * config["out_channels"]}))
    pipe.save_pretrained(tmp_path / "mixed")
    with pytest.raises(ValueError, match="do not fit together: pose_net.out_channels"):
        train_script.main(common_args(tmp_path / "mixed", video_dataset, tmp_path / "out", 1))
    assert not list((tmp_path / "out").glob("checkpoint-*"))


def test_gradient_checkpointing_flag_defaults_to_whole_blocks(train_script):
    base = ["--pretrained-model", "p", "--train-data", "d", "--output-dir", "o"]
    assert train_script.parse_args(base).gradient_checkpointing is None
    # A bare flag must mean whole-block checkpointing: diffusers' layer checkpointing leaves the temporal layers out.
    assert train_script.parse_args(base + ["--gradient-checkpointing", "--overfit-one-batch"]).gradient_checkpointing == "blocks"
    assert train_script.parse_args(base + ["--gradient-checkpointing", "layers"]).gradient_checkpointing == "layers"
    with pytest.raises(SystemExit):
        train_script.parse_args(base + ["--gradient-checkpointing", "everything"])


def _params(module):
    return {name: p.detach() for name, p in module.named_parameters()}


def test_full_training_changes_exactly_the_documented_parameters(full_run, tiny_pipeline_dir):
    """Full mode trains PoseNet, FaceEncoder and every UNet parameter whose name contains `attentions`; nothing else moves."""
    out, _ = full_run
    trained, base = StableAnimatorPipeline.from_pretrained(out), StableAnimatorPipeline.from_pretrained(tiny_pipeline_dir)
    for component in ("unet", "pose_net", "face_encoder", "vae", "image_encoder"):
        after, before = _params(getattr(trained, component)), _params(getattr(base, component))
        assert after.keys() == before.keys()
        changed = {name for name in after if not torch.equal(after[name], before[name])}
        if component == "unet":
            expected = {name for name in after if "attentions" in name}
        elif component in ("pose_net", "face_encoder"):
            expected = set(after)
        else:
            expected = set()
        assert changed == expected, component
