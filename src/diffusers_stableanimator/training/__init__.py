"""Fine-tuning support: the dataset and the training objective (the script is examples/train_stableanimator.py)."""

from .dataset import FACE_EMBEDDING_FILE, StableAnimatorVideoDataset, list_video_folders, sample_clip
from .objective import (
    ConditioningKeep,
    conditioning_dropout,
    cosine_interpolated_sigmas,
    denoised_from_v,
    face_weighted_loss,
    input_scale,
    loss_weighting,
    noise_conditioning,
    sample_sigmas,
    stratified_uniform,
)
from .step import LORA_TARGET_MODULES, configure_trainable, encode_clip, training_loss


__all__ = [
    "FACE_EMBEDDING_FILE",
    "LORA_TARGET_MODULES",
    "ConditioningKeep",
    "StableAnimatorVideoDataset",
    "conditioning_dropout",
    "configure_trainable",
    "cosine_interpolated_sigmas",
    "denoised_from_v",
    "encode_clip",
    "face_weighted_loss",
    "input_scale",
    "list_video_folders",
    "loss_weighting",
    "noise_conditioning",
    "sample_clip",
    "sample_sigmas",
    "stratified_uniform",
    "training_loss",
]
