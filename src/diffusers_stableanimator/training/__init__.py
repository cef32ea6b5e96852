"""Fine-tuning support: the dataset and the training objective (the script is examples/train_stableanimator.py)."""

from .._lazy import lazy_exports

_EXPORTS = {
    "FACE_EMBEDDING_FILE": ".dataset",
    "StableAnimatorVideoDataset": ".dataset",
    "list_video_folders": ".dataset",
    "sample_clip": ".dataset",
    "ConditioningKeep": ".objective",
    "conditioning_dropout": ".objective",
    "cosine_interpolated_sigmas": ".objective",
    "denoised_from_v": ".objective",
    "face_weighted_loss": ".objective",
    "input_scale": ".objective",
    "loss_weighting": ".objective",
    "noise_conditioning": ".objective",
    "sample_sigmas": ".objective",
    "stratified_uniform": ".objective",
    "LORA_TARGET_MODULES": ".step",
    "configure_trainable": ".step",
    "encode_clip": ".step",
    "training_loss": ".step",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

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
