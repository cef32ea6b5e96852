"""Per-frame pixel metrics and the Fréchet distance, as DisCo's evaluation code defines them.

Frames are RGB uint8 arrays (H, W, 3) of the same size; each function returns one float per frame pair. The
paper's table (and DisCo, Champ, MimicMotion, StableAnimator...) averages them over all frames. Sources and
reasons for each choice are in docs/evaluation.md.
"""

from __future__ import annotations

import math

import numpy as np

IDENTICAL_PSNR = 100.0  # DisCo's value for two identical frames (MSE 0), kept so results stay comparable

# OpenCV 3/4's fixed-point BT.601 luma (cvtColor RGB2GRAY on 8-bit images, what DisCo ran): weights out of 2**14,
# rounded. OpenCV 5 uses a 2**15 scale and rounds some pixels one grey level differently.
_GRAY_SHIFT = 14
_GRAY_WEIGHTS = (4899, 9617, 1868)  # R, G, B


def _check_pair(generated: np.ndarray, real: np.ndarray) -> None:
    if generated.shape != real.shape or generated.dtype != np.uint8 or real.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 arrays of one shape, got {generated.dtype}{generated.shape} and {real.dtype}{real.shape}.")


def l1(generated: np.ndarray, real: np.ndarray) -> float:
    """DisCo's L1: the mean absolute difference over pixels and channels (0-255 scale) divided by H*W.

    The division by the pixel count is DisCo's (its `l1_eval`); it is why tables print L1 as ~1e-4."""
    _check_pair(generated, real)
    height, width = real.shape[:2]
    return float(np.abs(generated.astype(np.float64) - real.astype(np.float64)).mean() / (height * width))


def _psnr_from_mse(mse: float) -> float:
    return IDENTICAL_PSNR if mse == 0 else 20.0 * math.log10(255.0 / math.sqrt(mse))


def psnr(generated: np.ndarray, real: np.ndarray) -> float:
    """DisCo's PSNR, as the paper's "PSNR" column: the squared error is computed in uint8 arithmetic, so the
    difference and its square wrap modulo 256 (the overflow that PSNR* corrects)."""
    _check_pair(generated, real)
    wrapped = (generated - real) ** 2  # uint8 - uint8 and its square wrap around, as in DisCo's psnr_eval
    return _psnr_from_mse(float(wrapped.mean()))


def psnr_star(generated: np.ndarray, real: np.ndarray) -> float:
    """PSNR*: the textbook PSNR (peak 255, mean squared error over pixels and channels in real numbers)."""
    _check_pair(generated, real)
    return _psnr_from_mse(float(((generated.astype(np.float64) - real.astype(np.float64)) ** 2).mean()))


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 -> luma uint8 exactly as OpenCV 4's `cvtColor(..., COLOR_RGB2GRAY)` (DisCo converts with OpenCV)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    wr, wg, wb = _GRAY_WEIGHTS
    return ((r * wr + g * wg + b * wb + (1 << (_GRAY_SHIFT - 1))) >> _GRAY_SHIFT).astype(np.uint8)


def ssim(generated: np.ndarray, real: np.ndarray, win_size: int = 7, k1: float = 0.01, k2: float = 0.03, data_range: float = 255.0) -> float:
    """SSIM of the two frames' luma (DisCo: OpenCV grey, then scikit-image's `structural_similarity` defaults).

    A uniform `win_size` window, sample (N-1) covariances, C1 = (k1 L)^2, C2 = (k2 L)^2 with L = 255, averaged
    over the pixels whose window lies inside the image."""
    import torch
    import torch.nn.functional as F

    _check_pair(generated, real)
    if min(real.shape[:2]) < win_size:
        raise ValueError(f"SSIM needs frames of at least {win_size}x{win_size} pixels, got {real.shape[1]}x{real.shape[0]}.")
    x = torch.from_numpy(to_gray(generated)).double()[None, None]
    y = torch.from_numpy(to_gray(real)).double()[None, None]
    mean = lambda t: F.avg_pool2d(t, win_size, stride=1)  # noqa: E731  (valid windows only: the cropped mean)
    n = win_size * win_size
    unbias = n / (n - 1)
    mx, my = mean(x), mean(y)
    vx = unbias * (mean(x * x) - mx * mx)
    vy = unbias * (mean(y * y) - my * my)
    cxy = unbias * (mean(x * y) - mx * my)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


# ------------------------------------------------------------------------------------------------ Fréchet distance
class GaussianStats:
    """Mean and covariance of feature vectors, accumulated one batch at a time (float64 sums), so that FVD never
    holds all videos' features."""

    def __init__(self, dim: int):
        self.n = 0
        self._sum = np.zeros(dim)
        self._outer = np.zeros((dim, dim))

    def add(self, features: np.ndarray) -> None:
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        self.n += features.shape[0]
        self._sum += features.sum(axis=0)
        self._outer += features.T @ features

    @property
    def mean(self) -> np.ndarray:
        return self._sum / self.n

    @property
    def cov(self) -> np.ndarray:
        """The sample covariance (divided by n - 1), like `np.cov` in DisCo's FVD."""
        mu = self.mean
        return (self._outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def _psd_sqrt(matrix):
    import torch

    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)) between two Gaussians.

    Tr (C1 C2)^(1/2) is computed as the sum of the square roots of the eigenvalues of the symmetric
    C1^(1/2) C2 C1^(1/2) (the same eigenvalues), which stays real and stable for the rank-deficient covariances
    of small test sets. Float64 throughout (torch's eigensolver: numpy's is far slower on some BLAS builds)."""
    import torch

    as_matrix = lambda a: torch.from_numpy(np.atleast_2d(np.asarray(a, dtype=np.float64)))  # noqa: E731
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    cov1, cov2 = as_matrix(cov1), as_matrix(cov2)
    root1 = _psd_sqrt(cov1)
    eigenvalues = torch.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_sqrt = float(eigenvalues.clamp(min=0).sqrt().sum())
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(cov1) + torch.trace(cov2) - 2 * trace_sqrt)
