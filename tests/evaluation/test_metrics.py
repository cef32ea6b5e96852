"""The pixel metrics and the Fréchet distance against independent computations."""

import math

import numpy as np
import pytest

from diffusers_stableanimator.evaluation import metrics as M


def test_l1_and_psnr_star_on_a_known_difference():
    real = np.full((4, 5, 3), 100, np.uint8)
    generated = real.copy()
    generated[0, 0, 0] = 110  # one value off by 10 out of 60
    assert M.l1(generated, real) == pytest.approx(10 / 60 / 20)  # mean |diff| = 1/6, divided by H*W = 20
    assert M.psnr_star(generated, real) == pytest.approx(20 * math.log10(255 / math.sqrt(100 / 60)))
    assert M.psnr(real, real) == M.psnr_star(real, real) == 100.0


def test_psnr_wraps_like_uint8_arithmetic_and_psnr_star_does_not():
    real = np.full((2, 2, 3), 10, np.uint8)
    generated = np.full((2, 2, 3), 30, np.uint8)
    # textbook: error 20 everywhere -> MSE 400
    assert M.psnr_star(generated, real) == pytest.approx(20 * math.log10(255 / 20))
    # uint8: 30 - 10 = 20, 20**2 = 400 -> 400 mod 256 = 144
    assert M.psnr(generated, real) == pytest.approx(20 * math.log10(255 / 12))
    # the other way round the difference wraps too: 10 - 30 = 236, 236**2 mod 256 = 144
    assert M.psnr(real, generated) == pytest.approx(20 * math.log10(255 / 12))


def test_gray_is_opencv4_fixed_point_luma():
    """DisCo ran OpenCV 4, whose 8-bit RGB->grey is round((4899 R + 9617 G + 1868 B) / 2**14); OpenCV 5 changed the
    fixed-point scale, so it may differ by one grey level."""
    rgb = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    expected = np.array([[int((4899 * int(p[0]) + 9617 * int(p[1]) + 1868 * int(p[2])) / 16384 + 0.5) for p in row] for row in rgb])
    np.testing.assert_array_equal(M.to_gray(rgb), expected)
    cv2 = pytest.importorskip("cv2")
    assert np.abs(M.to_gray(rgb).astype(int) - cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)).max() <= 1


@pytest.mark.parametrize("shape", [(32, 48, 3), (7, 9, 3)])
def test_ssim_matches_scikit_image(shape):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, shape, dtype=np.uint8)
    generated = np.clip(real.astype(int) + rng.integers(-40, 40, shape), 0, 255).astype(np.uint8)
    expected = structural_similarity(M.to_gray(generated), M.to_gray(real))  # DisCo's call: uint8 grey, defaults
    assert M.ssim(generated, real) == pytest.approx(expected, abs=1e-9)
    assert M.ssim(real, real) == pytest.approx(1.0)


def test_frame_pairs_must_match():
    with pytest.raises(ValueError):
        M.l1(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3, 3), np.uint8))


def test_frechet_distance_closed_form_for_commuting_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2
    expected = 5.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)


def test_frechet_distance_general_covariances_against_scipy():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    c1, c2 = x @ x.T + 0.1 * np.eye(5), y @ y.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * sqrtm(c1 @ c2).real)
    assert M.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)
    assert M.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0, abs=1e-8)


def test_streamed_statistics_equal_numpy_on_all_samples():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(13, 4)) * [1, 2, 3, 4] + 5
    stats = M.GaussianStats(4)
    for chunk in (features[:1], features[1:6], features[6:]):
        stats.add(chunk)
    np.testing.assert_allclose(stats.mean, features.mean(axis=0))
    np.testing.assert_allclose(stats.cov, np.cov(features, rowvar=False), atol=1e-10)
