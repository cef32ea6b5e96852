"""Reading and normalising images: the one place that turns a user's picture into RGB.

Rules, the same for every command and the Python API:
- Files: EXIF orientation is applied (phone photos come out upright); 16-bit greyscale PNGs are scaled to 8 bits
  (not clipped); palette images are expanded; alpha is composited on white. Empty, truncated or non-image files,
  images above Pillow's decompression-bomb limit and (for a reference photo) images under `REFERENCE_MIN_SIDE`
  pixels a side are refused with a message that names the file.
- Arrays and tensors: integer types are 0-255, floating types are 0-1. Anything outside that range, or NaN, is
  refused rather than clipped.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps

from .errors import StableAnimatorError

REFERENCE_MIN_SIDE = 32  # a smaller photo carries no usable person or face
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow's modes for 16-bit greyscale PNGs


def open_image(path: str | os.PathLike, what: str = "image", min_side: int = 1) -> PIL.Image.Image:
    """An image file as an upright RGB PIL image (see the module's rules). `what` names it in messages."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist." if not path.is_dir() else f"{what} {path} is a folder, not an image file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # large photos are fine: refused only past the hard limit
            with PIL.Image.open(path) as image:
                image.load()
                image = PIL.ImageOps.exif_transpose(image)
    except PIL.Image.DecompressionBombError:
        limit = 2 * PIL.Image.MAX_IMAGE_PIXELS / 1e6
        raise StableAnimatorError(f"{what} {path} has more than {limit:.0f} million pixels, more than is safe to open; downscale it first.") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for empty, truncated and non-image files
        raise StableAnimatorError(f"{what} {path} cannot be read as an image ({error}); is it a complete PNG or JPEG file?") from None
    if min(image.size) < min_side:
        raise StableAnimatorError(f"{what} {path} is {image.size[0]}x{image.size[1]} pixels; it needs at least {min_side} pixels a side.")
    return to_rgb(image, f"{what} {path}")


def to_rgb(image: PIL.Image.Image, what: str = "image") -> PIL.Image.Image:
    """A PIL image of any mode as RGB: 16-bit greyscale scaled by 1/257, palettes expanded, alpha composited on white."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise StableAnimatorError(f"{what}: 32-bit integer pixels are not supported; save it as an 8- or 16-bit image.")
        image = PIL.Image.fromarray(np.round(values / 257.0).astype(np.uint8), mode="L")
    elif image.mode == "F":
        raise StableAnimatorError(f"{what}: floating-point image files are not supported; save it as an 8- or 16-bit image.")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = PIL.Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def from_array(array: Any, what: str = "image") -> PIL.Image.Image:
    """An `(H, W)`, `(H, W, 1|3|4)` array or a `(C, H, W)` tensor as an RGB PIL image: integers 0-255, floats 0-1."""
    import torch

    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
            raise StableAnimatorError(f"{what}: a tensor must be (C, H, W), got shape {tuple(tensor.shape)}.")
        array = (tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor).permute(1, 2, 0).numpy()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise StableAnimatorError(f"{what}: an array must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}.")
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise StableAnimatorError(f"{what}: expected numbers (integers 0-255 or floats 0-1), got dtype {array.dtype}.")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise StableAnimatorError(f"{what}: contains NaN or infinite values.")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise StableAnimatorError(f"{what}: float values must lie in [0, 1], got {low:.3g} to {high:.3g}; divide 0-255 values by 255.")
        array = np.round(array.astype(np.float64) * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise StableAnimatorError(f"{what}: integer values must lie in 0-255, got {low} to {high}; scale 16-bit values down (divide by 257).")
        array = array.astype(np.uint8)
    return to_rgb(PIL.Image.fromarray(np.ascontiguousarray(array)), what)
