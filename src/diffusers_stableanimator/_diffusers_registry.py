"""Make diffusers' pipeline loader treat this package like one of its own libraries.

`save_pretrained` then records components as `["diffusers_stableanimator", "PoseNet"]` in `model_index.json`,
and `DiffusionPipeline.download` (the path taken for a Hub repo id) accepts that library name instead of
rejecting it as "not a module in 'diffusers/pipelines'". The table maps each of our classes to its save and
load methods, exactly as diffusers' own entry does for `ModelMixin` and `SchedulerMixin`.

`DiffusionPipeline.from_pretrained` finds a pipeline class by the `_class_name` of `model_index.json` as an
attribute of the `diffusers` module, so the pipeline class is exposed there too: after `import
diffusers_stableanimator`, the generic loader returns a `StableAnimatorPipeline`.

`set_adapters` (LoRA weights) looks a model's scale function up by class name: recent diffusers give unknown names
the identity, 0.33 (the oldest setup.cfg allows) raises a KeyError, so `register_lora_model` names ours, with the
identity.
"""

from __future__ import annotations

LIBRARY_NAME = "diffusers_stableanimator"


def register(class_names: list[str]) -> None:
    from diffusers.pipelines import pipeline_loading_utils

    methods = {name: ["save_pretrained", "from_pretrained"] for name in class_names}
    pipeline_loading_utils.LOADABLE_CLASSES[LIBRARY_NAME] = methods
    # The same dict object is imported by pipeline_utils; update it in place.
    pipeline_loading_utils.ALL_IMPORTABLE_CLASSES.update(methods)


def expose_pipeline(pipeline_class) -> None:
    import diffusers

    setattr(diffusers, pipeline_class.__name__, pipeline_class)


def register_lora_model(model_class) -> None:
    from diffusers.loaders import peft

    peft._SET_ADAPTER_SCALE_FN_MAPPING.setdefault(model_class.__name__, lambda model, weights: weights)
