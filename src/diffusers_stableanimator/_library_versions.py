"""What differs between the transformers and diffusers versions setup.cfg allows (.ci/oldest-versions runs the
tests in the oldest, and loads there a folder saved with the newest). Registering our UNet's LoRA scale function
with diffusers 0.33 is in `_diffusers_registry`."""

from __future__ import annotations

import diffusers
import transformers
from diffusers.loaders.lora_base import LoraBaseMixin
from packaging import version

# `from_pretrained(dtype=...)` replaced `torch_dtype=` in transformers 4.56 and diffusers 0.40; older versions
# ignore (diffusers) or reject (transformers) `dtype`.
_TRANSFORMERS_TAKES_DTYPE = version.parse(transformers.__version__) >= version.parse("4.56.0")
_DIFFUSERS_TAKES_DTYPE = version.parse(diffusers.__version__) >= version.parse("0.40.0")


def dtype_argument(cls: type, dtype) -> dict:
    """The keyword argument that gives `cls.from_pretrained` its dtype in the installed version of its library:
    `{"dtype": dtype}` or `{"torch_dtype": dtype}`."""
    new = _TRANSFORMERS_TAKES_DTYPE if cls.__module__.startswith("transformers") else _DIFFUSERS_TAKES_DTYPE
    return {"dtype" if new else "torch_dtype": dtype}


# LoRA adapter metadata (rank, alpha and targets saved with the weights) came after diffusers 0.33: older versions
# neither save, return nor take it.
DIFFUSERS_LORA_METADATA = hasattr(LoraBaseMixin, "_save_lora_weights")
