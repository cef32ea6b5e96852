"""Small helpers shared by the preprocessing modules: optional imports, model folders, ONNX providers,
image loading.

Heavy optional dependencies (OpenCV, onnxruntime, torch) are imported inside functions so that
importing this package stays cheap and the optional extras stay optional.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import StableAnimatorError

# Where model files are looked for when the user gives no path. One root, one folder per model pack.
MODELS_ENV = "STABLEANIMATOR_MODELS"
DEFAULT_MODELS_ROOT = "~/.cache/stableanimator/models"


class ModelFilesNotFoundError(FileNotFoundError):
    """A model file the preprocessing needs is not on disk. The message says which files are
    expected, where they were looked for and where to get them; nothing is ever downloaded."""


def models_root() -> Path:
    return Path(os.environ.get(MODELS_ENV, DEFAULT_MODELS_ROOT)).expanduser()


def require_cv2():
    try:
        import cv2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "OpenCV is needed for pose extraction and drawing. Install it with "
            '`pip install "diffusers-stableanimator[pose]"`.'
        ) from error
    return cv2


def require_onnxruntime(extra: str = "pose"):
    try:
        import onnxruntime
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "onnxruntime is needed to run the preprocessing models. Install it with "
            f'`pip install "diffusers-stableanimator[{extra}]"` (GPU users then replace it: '
            "`pip uninstall -y onnxruntime && pip install onnxruntime-gpu`)."
        ) from error
    return onnxruntime


def _device_type_and_index(device: Any) -> tuple[str | None, int]:
    if device is None:
        return None, 0
    text = str(device)  # accepts "cpu", "cuda", "cuda:1" and torch.device
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<index>' (or None for automatic), got {device!r}.")
    return kind, int(index) if index else 0


def onnx_providers(device: Any = None) -> list:
    """ONNX Runtime providers for a torch-style device.

    CUDA is used only when torch sees a GPU *and* onnxruntime lists the CUDA provider: the CPU
    `onnxruntime` wheel never has it, and `onnxruntime-gpu` lists it even on machines without a GPU.
    `device=None` picks CUDA when both hold, else CPU. `device="cuda"` when either is missing is an
    error rather than a silent fallback.
    """
    ort = require_onnxruntime()
    kind, index = _device_type_and_index(device)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    cuda_listed = "CUDAExecutionProvider" in ort.get_available_providers()
    try:
        import torch

        cuda_torch = torch.cuda.is_available()
    except ImportError:  # torch is a hard dependency of the package; kept for standalone use
        cuda_torch = False
    if cuda_listed and cuda_torch:
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if kind == "cuda":
        reason = (
            "torch sees no CUDA device"
            if not cuda_torch
            else "onnxruntime has no CUDAExecutionProvider (the CPU `onnxruntime` wheel is installed)"
        )
        raise StableAnimatorError(
            f"device={device!r} was requested for the ONNX models but {reason}. Use device='cpu', or "
            "install the GPU runtime: `pip uninstall -y onnxruntime && pip install onnxruntime-gpu`."
        )
    return ["CPUExecutionProvider"]


def load_rgb(image: Any) -> np.ndarray:
    """Return an image as an RGB uint8 array (H, W, 3).

    Accepts a path (read with `images.open_image`: EXIF orientation applied, 16-bit scaled, alpha on white), a
    PIL image, or an array that is already RGB uint8 (H, W, 3) (or grayscale (H, W)). Arrays are never
    channel-swapped: pass RGB, not OpenCV's BGR.
    """
    from ..images import open_image, to_rgb

    if isinstance(image, (str, os.PathLike)):
        return np.asarray(open_image(image)).copy()
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image
        return np.asarray(to_rgb(image)).copy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(
            f"Expected an RGB image of shape (H, W, 3), got an array of shape {array.shape}. "
            "Pass a PIL image, a file path, or an RGB uint8 array."
        )
    if array.dtype != np.uint8:
        raise ValueError(
            f"Expected a uint8 image (values 0-255), got dtype {array.dtype}. Convert it with "
            "`(array * 255).round().clip(0, 255).astype(np.uint8)` if it is in [0, 1]."
        )
    return np.ascontiguousarray(array[:, :, :3])


def check_files(folder: Path | None, files: Sequence[Path], what: str, how_to_get: str) -> None:
    """Raise `ModelFilesNotFoundError` naming every missing file."""
    missing = [f for f in files if not Path(f).is_file()]
    if not missing:
        return
    lines = "\n".join(f"  - {f}" for f in missing)
    where = f" (looked in {folder})" if folder is not None else ""
    raise ModelFilesNotFoundError(f"{what}: missing model file(s){where}:\n{lines}\n{how_to_get}")


def load_onnx_model(path: Path, load, how_to_get: str):
    """`load(path)` (an ONNX session or an insightface model), with one line naming the file when it is damaged."""
    try:
        return load(str(path))
    except Exception as error:  # onnxruntime raises its own types for truncated or foreign files
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise StableAnimatorError(f"{path} is not a usable ONNX model ({reason}); it may be damaged or incomplete: download it again. {how_to_get}") from None
