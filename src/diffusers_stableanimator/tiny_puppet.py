"""The tiny puppet model: a StableAnimator at toy scale trained on synthetic puppets (issue 14), shipped with the
package as `tiny-puppet` (`stableanimator smoke`, `animate --model tiny-puppet`).

* `untrained_components`: the architecture (64x64 frames, x4 VAE, 16x16x16 latents) with fresh weights, which
  examples/puppets/train_tiny.py trains;
* `WEIGHTS`: the trained pipeline folder inside the package (`save_pretrained`, fp16 safetensors), with the puppet
  recognizer as its `face_recognizer`; `load_tiny_puppet` loads it;
* `THICK_PASTEL_LORA`: a UNet LoRA fine-tuned on thick-limbed pastel puppets (`puppets.THICK_PASTEL`), `ship_lora` stores it;
* `EXAMPLE`: one held-out puppet (reference frame, 16 pose frames, face boxes and the recognizer's embedding of the
  reference face), stored as pictures so that the smoke run needs neither OpenCV nor the puppet renderer.
  `write_example` writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TINY_PUPPET = "tiny-puppet"
SIZE = 64  # frames are SIZE x SIZE
WIDTH = 32  # cross-attention / CLIP width
ID_DIM = 512  # the ArcFace width, so that real embeddings fit too
WEIGHTS = Path(__file__).resolve().parent / "weights" / "tiny-puppet"
EXAMPLE = Path(__file__).resolve().parent / "weights" / "puppet-example"
# A UNet LoRA that draws puppets in `puppets.THICK_PASTEL` (examples/puppets/train_style_lora.py --ship):
# `load_tiny_puppet().load_lora_weights(THICK_PASTEL_LORA)`.
THICK_PASTEL_LORA = Path(__file__).resolve().parent / "weights" / "tiny-puppet-thick-pastel-lora"
# The VAE: three blocks, x4 downsampling, 16x16 latents (with x8, thin limbs are lost). The stock temporal VAE's
# GroupNorms have 32 groups; the encoder's last one (over its last block's channels) and the decoder's last one
# (over the first block's, at full resolution) have no skip around them, so a frame's mean colour gets through
# only as a difference between the channels of one group. With 32 channels (one per group) flat colours decoded
# grey; 64 at both ends and 16 latent channels hold colours (docs/puppets.md, "The VAE and colours").
VAE_CHANNELS = (64, 32, 64)
LATENT_CHANNELS = 16
# The UNet has the same flaw: its last GroupNorm (over the first block's channels, before the output convolution)
# has no skip around it, and with 32 channels it erased each latent channel's frame mean, i.e. the background's
# colour. 64 channels: held-out L1 0.0071 -> 0.0059, PSNR* 16.6 -> 17.5 dB after 1200 steps, at 1.3x the time of a step
# (docs/puppets.md, "The UNet and colours").
UNET_CHANNELS = (64, 64)
EXAMPLE_FRAMES = 16
EXAMPLE_INDEX = 0  # `puppet_evaluation.held_out_case` index of the example puppet


def untrained_components(seed: int = 0) -> dict:
    """The untrained tiny components (64x64 frames, 16x16 latents). Zero-initialised outputs (PoseNet's and the
    FaceEncoder's projections) stay zero, as in the real recipe: training opens them."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from .models import FaceEncoder, PoseNet, StableAnimatorUNetModel
    from .testing import svd_xt_scheduler

    torch.manual_seed(seed)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=VAE_CHANNELS, down_block_types=("DownEncoderBlock2D",) * 3,
                                       latent_channels=LATENT_CHANNELS, layers_per_block=1, sample_size=SIZE)
    # The decoder's last layer mixes each output colour with the neighbouring frames' (a 3x1x1 convolution). Start
    # it as the identity, so that training starts from a plain image decoder instead of first undoing a random
    # mix of colours and frames (10% lower reconstruction error after 600 steps in a pilot).
    with torch.no_grad():
        mix = vae.decoder.time_conv_out
        mix.weight.zero_()
        mix.bias.zero_()
        mix.weight[:, :, 1, 0, 0] = torch.eye(mix.weight.shape[0])
    return {
        "unet": StableAnimatorUNetModel(
            in_channels=2 * LATENT_CHANNELS, out_channels=LATENT_CHANNELS, block_out_channels=UNET_CHANNELS, layers_per_block=1,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            cross_attention_dim=WIDTH, num_attention_heads=(2, 4), addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=24, num_frames=8,
        ),
        "vae": vae,
        "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, projection_dim=WIDTH, num_hidden_layers=2, num_attention_heads=4, image_size=32,
            intermediate_size=37, patch_size=4)),
        "feature_extractor": CLIPImageProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32}),
        "pose_net": PoseNet(block_out_channels=(8, 16, 16), out_channels=UNET_CHANNELS[0]),  # x4, as the VAE
        "face_encoder": FaceEncoder(id_embeddings_dim=ID_DIM, clip_embeddings_dim=WIDTH, cross_attention_dim=WIDTH,
                                    num_tokens=4, depth=2, dim_head=8, heads=4, ff_mult=2),
        "scheduler": svd_xt_scheduler(),
        "face_recognizer": None,
    }


def load_tiny_puppet(dtype=None):
    """The shipped trained tiny puppet pipeline (fp16 weights, cast to `dtype`, float32 by default)."""
    import torch

    from .errors import StableAnimatorError
    from .pipeline_stableanimator import StableAnimatorPipeline

    if not (WEIGHTS / "model_index.json").is_file():
        raise StableAnimatorError(f"The tiny puppet weights are missing from the install ({WEIGHTS}); reinstall the package.")
    pipe = StableAnimatorPipeline.from_pretrained(str(WEIGHTS), dtype=dtype or torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ship(pipeline_folder, weights: Path = WEIGHTS, example: Path = EXAMPLE) -> None:
    """Copy a trained pipeline into the package as fp16 safetensors (half the size; `load_tiny_puppet` casts back
    to float32) and write the example puppet with its recognizer. Replaces earlier weights once both are written."""
    import torch

    from .memory_presets import cast_pipeline
    from .outputs import StagedOutputs
    from .pipeline_stableanimator import StableAnimatorPipeline

    pipe = StableAnimatorPipeline.from_pretrained(str(pipeline_folder))
    if pipe.face_recognizer is None:
        from .errors import StableAnimatorError

        raise StableAnimatorError(f"{pipeline_folder} has no face_recognizer; the recipe (examples/puppets/train_tiny.py) adds it.")
    # The configs would otherwise record the training run's folder on the machine that trained it.
    for part in (pipe, *pipe.components.values()):
        if hasattr(part, "register_to_config"):
            part.register_to_config(_name_or_path=TINY_PUPPET)
        elif hasattr(getattr(part, "config", None), "_name_or_path"):
            part.config._name_or_path = TINY_PUPPET
    with StagedOutputs() as staged:  # an interrupted run keeps the old weights and example
        cast_pipeline(pipe, torch.float16).save_pretrained(str(staged.folder(weights)), safe_serialization=True)
        write_example(cast_pipeline(pipe, torch.float32).face_recognizer, staged.folder(example))


def ship_lora(lora_folder, weights: Path = THICK_PASTEL_LORA) -> None:
    """Copy a LoRA run's `pytorch_lora_weights.safetensors` into the package (replacing the earlier one only once
    the new one is written)."""
    import shutil

    from .errors import StableAnimatorError
    from .lora import LORA_WEIGHT_NAME
    from .outputs import StagedOutputs

    source = Path(lora_folder) / LORA_WEIGHT_NAME
    if not source.is_file():
        raise StableAnimatorError(f"{lora_folder} holds no {LORA_WEIGHT_NAME}; train one with examples/puppets/train_style_lora.py.")
    with StagedOutputs() as staged:
        shutil.copyfile(source, staged.folder(weights) / LORA_WEIGHT_NAME)


def write_example(recognizer, folder: Path = EXAMPLE) -> None:
    """Write the held-out example puppet: `reference.png`, `poses.png` (the pose frames side by side),
    `truth.png` (the ground-truth frames side by side) and `example.json` (seeds, face boxes, face embedding)."""
    from PIL import Image

    from .puppet_evaluation import HELD_OUT_IDENTITY, HELD_OUT_MOTION, held_out_case

    case = held_out_case(EXAMPLE_INDEX, EXAMPLE_FRAMES, SIZE, recognizer)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(case.video.frames[0]).save(folder / "reference.png")
    Image.fromarray(np.concatenate(case.video.pose_images[case.start:], axis=1)).save(folder / "poses.png")
    Image.fromarray(np.concatenate(case.truth, axis=1)).save(folder / "truth.png")
    (folder / "example.json").write_text(json.dumps({
        "identity_seed": HELD_OUT_IDENTITY + EXAMPLE_INDEX, "motion_seed": HELD_OUT_MOTION + EXAMPLE_INDEX,
        "face_boxes": case.face_boxes, "reference_face_box": case.reference_face_box,
        "face_embedding": [round(float(v), 5) for v in case.face_embedding],
    }) + "\n")


def load_example(num_frames: int = EXAMPLE_FRAMES) -> dict:
    """The example puppet: `reference` (PIL), `poses` and `truth` (lists of PIL frames), `face_embedding` (512,),
    `face_boxes` (exclusive, one per frame) and `reference_face_box`."""
    from PIL import Image

    from .errors import StableAnimatorError

    if not 1 <= num_frames <= EXAMPLE_FRAMES:
        raise StableAnimatorError(f"The example puppet has {EXAMPLE_FRAMES} pose frames; ask for 1 to {EXAMPLE_FRAMES}, got {num_frames}.")
    meta = json.loads((EXAMPLE / "example.json").read_text())

    def strip(name):
        pictures = np.asarray(Image.open(EXAMPLE / name).convert("RGB"))
        return [Image.fromarray(pictures[:, i * SIZE : (i + 1) * SIZE]) for i in range(num_frames)]

    return {"reference": Image.open(EXAMPLE / "reference.png").convert("RGB"), "poses": strip("poses.png"),
            "truth": strip("truth.png"), "face_embedding": np.array(meta["face_embedding"], dtype=np.float32),
            "face_boxes": [tuple(b) for b in meta["face_boxes"][:num_frames]],
            "reference_face_box": tuple(meta["reference_face_box"]), "identity_seed": meta["identity_seed"],
            "motion_seed": meta["motion_seed"]}
