"""The feature extractors' weight files: where they are looked for, and loading a state dict with one-line errors.

Nothing is downloaded. The files sit in one folder (`--eval-models`, else `$STABLEANIMATOR_EVAL_MODELS`, else
`$STABLEANIMATOR_MODELS/evaluation`, else `~/.cache/stableanimator/models/evaluation`) under their published
names; docs/evaluation.md says where to get each.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from ..errors import StableAnimatorError
from ..preprocessing._common import models_root

EVAL_MODELS_ENV = "STABLEANIMATOR_EVAL_MODELS"

# file name -> where to get it (one line, printed in the error when the file is missing)
VGG16_FILE = "vgg16-397923af.pth"
LPIPS_VGG_FILE = "vgg.pth"
I3D_FILE = "i3d_pretrained_400.pt"
SOURCES = {
    VGG16_FILE: "torchvision's ImageNet VGG16, https://download.pytorch.org/models/vgg16-397923af.pth",
    LPIPS_VGG_FILE: "the LPIPS v0.1 linear layers, lpips/weights/v0.1/vgg.pth in github.com/richzhang/PerceptualSimilarity",
    I3D_FILE: "the Kinetics-400 I3D published by VideoGPT (github.com/wilson1yan/VideoGPT) and used by DisCo's FVD",
}


def default_eval_models_dir() -> Path:
    return Path(os.environ.get(EVAL_MODELS_ENV, models_root() / "evaluation")).expanduser()


def weight_file(folder: str | os.PathLike | None, name: str) -> Path:
    """The path of a published weight file in the evaluation models folder, or a one-line error saying where to get it."""
    folder = Path(folder).expanduser() if folder else default_eval_models_dir()
    path = folder / name
    if not path.is_file():
        raise StableAnimatorError(
            f"{path} is missing: put {SOURCES[name]} there under the name {name} (or pass --eval-models with the "
            f"folder holding it; see docs/evaluation.md). Nothing is downloaded."
        )
    return path


def read_state_dict(path: Path) -> dict:
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean the same thing to the user
        raise StableAnimatorError(f"{path} cannot be read as a PyTorch state dict ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); download it again.") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise StableAnimatorError(f"{path} holds a {type(state).__name__}, not a state dict; download the published file again.")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_exact(module, state: Mapping, path: Path, optional_suffixes: tuple[str, ...] = ("num_batches_tracked",)) -> None:
    """Load `state` into `module`, requiring every parameter and buffer (except `optional_suffixes`) with its shape."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(optional_suffixes)]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})" for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        detail = f"missing {', '.join(missing[:3])}" if missing else f"wrong shape {', '.join(wrong[:2])}"
        raise StableAnimatorError(f"{path} does not have the published layout ({detail}{' ...' if len(missing) > 3 or len(wrong) > 2 else ''}); is it {SOURCES.get(path.name, 'the right file')}?")
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
