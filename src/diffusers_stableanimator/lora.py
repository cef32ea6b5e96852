"""LoRA loading for StableAnimatorPipeline (UNet only), on diffusers' LoRA machinery and peft.

    pipe.load_lora_weights("my-lora")                # folder with pytorch_lora_weights.safetensors, a file, or a dict
    pipe.fuse_lora(lora_scale=0.8); pipe.unfuse_lora()
    pipe.load_lora_weights("other-lora", adapter_name="other"); pipe.set_adapters(["default_0", "other"], [1.0, 0.5])
    pipe.load_finetuned_modules("my-lora")           # ID-Adapter / PoseNet / FaceEncoder trained alongside, if any

The training script writes the LoRA file with `save_lora_weights` (keys `unet.<module>.lora_A.weight`, ...).
Weights trained in full next to the LoRA (not LoRA themselves, so `load_lora_weights` would reject them) go to
separate files that `load_finetuned_modules` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers.loaders.lora_base import LoraBaseMixin
from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
from diffusers.utils import logging

from ._library_versions import DIFFUSERS_LORA_METADATA

logger = logging.get_logger(__name__)

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
ID_ADAPTER_WEIGHT_NAME = "id_adapter.safetensors"  # UNet parameters `*.processor.id_to_k/id_to_v.*`
POSE_NET_FOLDER = "pose_net"
FACE_ENCODER_FOLDER = "face_encoder"


class StableAnimatorLoraLoaderMixin(LoraBaseMixin):
    r"""
    Load LoRA layers into the pipeline's [`StableAnimatorUNetModel`] (the only LoRA-loadable component). Gives
    `load_lora_weights`, `save_lora_weights`, `fuse_lora`, `unfuse_lora`, and from `LoraBaseMixin`
    `set_adapters`, `disable_lora`, `enable_lora`, `delete_adapters`, `unload_lora_weights`.
    """

    _lora_loadable_modules = ["unet"]
    unet_name = "unet"

    @classmethod
    def lora_state_dict(cls, pretrained_model_name_or_path_or_dict, **kwargs):
        """The LoRA state dict (and network alphas) from a folder, file, Hub repo or dict; see diffusers' SD mixin."""
        return StableDiffusionLoraLoaderMixin.lora_state_dict(pretrained_model_name_or_path_or_dict, **kwargs)

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name: str | None = None, hotswap: bool = False, **kwargs):
        """
        Load a UNet LoRA (e.g. the output of `examples/train_stableanimator.py --lora-rank ...`) into `self.unet`.
        Keyword arguments (`weight_name`, `subfolder`, `local_files_only`, ...) go to `lora_state_dict`.
        """
        low_cpu_mem_usage = kwargs.pop("low_cpu_mem_usage", False)
        if isinstance(pretrained_model_name_or_path_or_dict, dict):
            pretrained_model_name_or_path_or_dict = pretrained_model_name_or_path_or_dict.copy()
        if DIFFUSERS_LORA_METADATA:
            state_dict, network_alphas, metadata = self.lora_state_dict(pretrained_model_name_or_path_or_dict, return_lora_metadata=True, **kwargs)
        else:
            (state_dict, network_alphas), metadata = self.lora_state_dict(pretrained_model_name_or_path_or_dict, **kwargs), None
        not_lora = [key for key in state_dict if "lora" not in key]
        if not_lora:
            raise ValueError(
                f"Not a LoRA checkpoint: {len(not_lora)} keys without 'lora', e.g. {not_lora[:3]}. For the ID-Adapter, "
                "PoseNet or FaceEncoder weights saved next to a LoRA use `pipe.load_finetuned_modules(folder)`."
            )
        self.unet.load_lora_adapter(
            state_dict,
            prefix=self.unet_name,
            network_alphas=network_alphas,
            adapter_name=adapter_name,
            **({"metadata": metadata} if DIFFUSERS_LORA_METADATA else {}),
            _pipeline=self,
            low_cpu_mem_usage=low_cpu_mem_usage,
            hotswap=hotswap,
        )

    @classmethod
    def save_lora_weights(
        cls,
        save_directory: str | os.PathLike,
        unet_lora_layers: dict[str, torch.Tensor],
        is_main_process: bool = True,
        weight_name: str | None = None,
        save_function=None,
        safe_serialization: bool = True,
        unet_lora_adapter_metadata: dict | None = None,
    ):
        """Save UNet LoRA layers (a peft state dict in diffusers naming) as `pytorch_lora_weights.safetensors`."""
        if not unet_lora_layers:
            raise ValueError("`unet_lora_layers` is empty: nothing to save.")
        options = dict(save_directory=save_directory, is_main_process=is_main_process, weight_name=weight_name,
                       save_function=save_function, safe_serialization=safe_serialization)
        if not DIFFUSERS_LORA_METADATA:
            return cls.write_lora_layers(state_dict=cls.pack_weights(unet_lora_layers, cls.unet_name), **options)
        cls._save_lora_weights(lora_layers={cls.unet_name: unet_lora_layers}, lora_metadata={cls.unet_name: unet_lora_adapter_metadata}, **options)

    def fuse_lora(self, components: list[str] = ["unet"], lora_scale: float = 1.0, safe_fusing: bool = False, adapter_names: list[str] | None = None, **kwargs):
        """Merge the active LoRA(s) into the UNet weights (faster inference); `unfuse_lora` undoes it."""
        super().fuse_lora(components=components, lora_scale=lora_scale, safe_fusing=safe_fusing, adapter_names=adapter_names, **kwargs)

    def unfuse_lora(self, components: list[str] = ["unet"], **kwargs):
        """Undo `fuse_lora`."""
        super().unfuse_lora(components=components, **kwargs)

    def load_finetuned_modules(self, directory: str | os.PathLike) -> list[str]:
        """
        Load what a LoRA training run trained in full next to the LoRA, whichever of these `directory` holds:
        `id_adapter.safetensors` (the UNet's ID-Adapter), `pose_net/` and `face_encoder/` (`save_pretrained` folders).
        Returns the names of what was loaded.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        loaded = []
        id_adapter = directory / ID_ADAPTER_WEIGHT_NAME
        if id_adapter.is_file():
            weights = load_file(str(id_adapter))
            unet_params = dict(self.unet.named_parameters())
            unknown = [key for key in weights if key not in unet_params]
            if unknown:
                raise ValueError(f"{id_adapter} has keys the UNet does not have, e.g. {unknown[:3]}; was it trained for another UNet?")
            with torch.no_grad():
                for key, value in weights.items():
                    unet_params[key].copy_(value.to(unet_params[key]))
            loaded.append("id_adapter")
        for folder, name in ((POSE_NET_FOLDER, "pose_net"), (FACE_ENCODER_FOLDER, "face_encoder")):
            if (directory / folder).is_dir():
                module = getattr(self, name)
                trained = type(module).from_pretrained(directory / folder)
                module.load_state_dict(trained.state_dict())
                loaded.append(name)
        if not loaded:
            logger.warning(f"{directory} holds no {ID_ADAPTER_WEIGHT_NAME}, {POSE_NET_FOLDER}/ or {FACE_ENCODER_FOLDER}/; nothing loaded.")
        return loaded
