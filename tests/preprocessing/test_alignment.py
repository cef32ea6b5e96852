import numpy as np
import pytest

from diffusers_stableanimator.preprocessing import AlignmentError, PoseFrame, align_poses, fit_alignment

REF_W, REF_H = 512, 768
# A standing person, OpenPose-18 order, in reference pixels.
REF_PIXELS = np.array([
    [256, 120], [256, 180], [216, 180], [200, 260], [196, 330], [296, 180], [312, 260], [316, 330],
    [230, 360], [228, 480], [226, 600], [282, 360], [284, 480], [286, 600], [248, 110], [264, 110],
    [238, 118], [274, 118],
], dtype=np.float64)


def frame(body_pixels, width, height, scores=None, faces=None):
    body_pixels = np.asarray(body_pixels, dtype=np.float64).reshape(-1, 18, 2)
    n = body_pixels.shape[0]
    scores = np.ones((n, 18)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(n, 18)
    faces = np.full((n, 68, 2), 0.5) if faces is None else faces
    return PoseFrame(body_pixels / [width, height], scores, faces, np.ones((n, 68)),
                     np.full((2 * n, 21, 2), 0.5), np.ones((2 * n, 21)), width, height)


def driving_from_reference(scale, shift, width, height, jitter=0.0, seed=0):
    """The reference person scaled by `scale` and shifted by `shift` in the driving frame's pixels."""
    rng = np.random.default_rng(seed)
    return frame(REF_PIXELS * scale + shift + rng.normal(0, jitter, REF_PIXELS.shape), width, height)


def aligned_pixels(pose):
    return pose.body[0] * [pose.width, pose.height]


@pytest.mark.parametrize("drv_size", [(1024, 1536), (1920, 1080), (720, 1280)])
def test_scaled_shifted_skeleton_maps_back_onto_reference(drv_size):
    """Same aspect ratio as the reference, and different ones (the case the official code gets wrong)."""
    w, h = drv_size
    reference = frame(REF_PIXELS, REF_W, REF_H)
    driving = [driving_from_reference(0.8, (300, 40), w, h), driving_from_reference(0.8, (300, 40), w, h)]
    aligned, transform = align_poses(reference, driving)
    assert (aligned[0].width, aligned[0].height) == (REF_W, REF_H)
    np.testing.assert_allclose(aligned_pixels(aligned[0]), REF_PIXELS, atol=1.0)
    np.testing.assert_allclose(aligned_pixels(aligned[1]), REF_PIXELS, atol=1.0)
    # The official ax = ay is only right for the reference's aspect ratio: measure how far off it is.
    ax, ay = transform.scale
    official_x = (driving[0].body[0, :, 0] * ay + transform.offset[0]) * REF_W
    official_x += np.mean(REF_PIXELS[:, 0] - official_x)  # even with its best offset
    error = np.abs(official_x - REF_PIXELS[:, 0]).max()
    if w / h == REF_W / REF_H:
        assert error < 1.0
    else:
        assert error > 10.0


def test_fit_matches_hand_computed_slopes():
    reference = frame(REF_PIXELS, REF_W, REF_H)
    driving = [driving_from_reference(0.5, (100, 200), 1920, 1080)]
    t = fit_alignment(reference, driving)
    # ref_y = ay * drv_y + by with drv_y = (0.5 * Y + 200) / 1080 and ref_y = Y / 768
    assert t.scale[1] == pytest.approx(1080 / (0.5 * 768))
    assert t.offset[1] == pytest.approx(-200 / (0.5 * 768))
    # isotropic in pixels: ax = ay * (W_drv * H_ref) / (H_drv * W_ref)
    assert t.scale[0] == pytest.approx(t.scale[1] * (1920 * 768) / (1080 * 512))
    assert t.scale[0] == pytest.approx(1920 / (0.5 * 512))


def test_elbows_wrists_and_invisible_reference_joints_do_not_affect_the_fit():
    ref_scores = np.ones(18)
    ref_scores[[10, 13]] = 0.0  # ankles not visible on the reference: garbage positions ignored
    ref_pixels = REF_PIXELS.copy()
    ref_pixels[[10, 13]] = [5, 5]
    reference = frame(ref_pixels, REF_W, REF_H, scores=ref_scores)
    drv = REF_PIXELS * 0.7 + (50, 60)
    drv[[3, 4, 6, 7]] = [[10, 10], [900, 10], [10, 900], [900, 900]]  # arms anywhere
    aligned, _ = align_poses(reference, [frame(drv, 1000, 1000)])
    keep = [i for i in range(18) if i not in (3, 4, 6, 7)]
    np.testing.assert_allclose(aligned_pixels(aligned[0])[keep], REF_PIXELS[keep], atol=1.0)
    # the arms are transformed with the same map
    np.testing.assert_allclose(aligned_pixels(aligned[0])[3], (np.array([10, 10]) - (50, 60)) / 0.7, atol=1.0)


def test_multi_and_zero_person_frames_are_excluded_from_fit_but_transformed():
    reference = frame(REF_PIXELS, REF_W, REF_H)
    good = driving_from_reference(0.8, (300, 40), 1024, 1536)
    crowd = frame(np.stack([REF_PIXELS * 0.2, REF_PIXELS * 0.3 + 500]), 1024, 1536)
    nobody = PoseFrame.empty(1024, 1536)
    aligned, transform = align_poses(reference, [crowd, good, nobody])
    np.testing.assert_allclose(aligned_pixels(aligned[1]), REF_PIXELS, atol=1.0)
    assert aligned[0].num_people == 2 and aligned[2].num_people == 0
    expected = (crowd.body * transform.scale + transform.offset)
    np.testing.assert_allclose(aligned[0].body, expected)
    np.testing.assert_allclose(aligned[0].faces, crowd.faces * transform.scale + transform.offset)
    np.testing.assert_allclose(aligned[0].hands, crowd.hands * transform.scale + transform.offset)
    np.testing.assert_array_equal(aligned[0].body_scores, crowd.body_scores)


def test_no_single_person_frame_falls_back_to_most_confident_person_with_warning():
    reference = frame(REF_PIXELS, REF_W, REF_H)
    crowd = frame(np.stack([REF_PIXELS * 0.8 + (300, 40), REF_PIXELS * 0.1]), 1024, 1536)
    with pytest.warns(UserWarning, match="exactly one person"):
        aligned, _ = align_poses(reference, [crowd])
    np.testing.assert_allclose(aligned_pixels(aligned[0]), REF_PIXELS, atol=1.0)


def test_alignment_can_be_disabled():
    reference = frame(REF_PIXELS, REF_W, REF_H)
    driving = [driving_from_reference(0.8, (300, 40), 1024, 1536)]
    aligned, transform = align_poses(reference, driving, enabled=False)
    np.testing.assert_array_equal(aligned[0].body, driving[0].body)
    assert (aligned[0].width, aligned[0].height) == (REF_W, REF_H)
    assert transform.scale == (1.0, 1.0)
    aligned, _ = align_poses(None, driving, enabled=False)
    assert (aligned[0].width, aligned[0].height) == (1024, 1536)


def test_errors_are_explicit():
    driving = [driving_from_reference(0.8, (300, 40), 1024, 1536)]
    with pytest.raises(AlignmentError, match="No person in the reference"):
        fit_alignment(PoseFrame.empty(REF_W, REF_H), driving)
    with pytest.raises(AlignmentError, match="--no-align"):
        fit_alignment(frame(REF_PIXELS, REF_W, REF_H, scores=np.zeros(18)), driving)
    with pytest.raises(AlignmentError, match="same size"):
        fit_alignment(frame(REF_PIXELS, REF_W, REF_H), driving + [driving_from_reference(1, (0, 0), 640, 480)])
    with pytest.raises(AlignmentError, match="No driving frame shows a person"):
        fit_alignment(frame(REF_PIXELS, REF_W, REF_H), [PoseFrame.empty(64, 64)])


def test_reference_joints_scored_exactly_0_3_are_left_out_of_the_fit():
    ref_pixels = REF_PIXELS.copy()
    ref_pixels[[10, 13]] = [5, 5]  # garbage ankle positions
    drv = frame(REF_PIXELS * 0.7 + (50, 60), 1000, 1000)
    fits = {}
    for score in (0.0, 0.3, 0.31):
        scores = np.ones(18)
        scores[[10, 13]] = score
        fits[score] = fit_alignment(frame(ref_pixels, REF_W, REF_H, scores=scores), [drv])
    assert fits[0.3] == fits[0.0]  # 0.3 is not visible (score > 0.3 is)
    assert abs(fits[0.31].scale[1] - fits[0.0].scale[1]) > 0.1  # control: visible garbage moves the fit


def test_x_offset_is_the_mean_residual_not_the_median():
    """bx = mean(ref_x - ax * drv_x) over the fit points, with ax = ay * (W_drv * H_ref) / (H_drv * W_ref)."""
    w, h = 1000, 800
    drv_pixels = REF_PIXELS * 0.5 + (100, 50)
    drv_pixels[[0, 14, 15, 16, 17], 0] += 40  # the head pushed right: x residuals skewed, median != mean
    reference = frame(REF_PIXELS, REF_W, REF_H)
    t = fit_alignment(reference, [frame(drv_pixels, w, h)])
    ids = [0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    # y is an exact affine map: ref_y / H_ref = ay * drv_y / H_drv + by with drv_y = 0.5 * Y + 50
    ay = h / (0.5 * REF_H)
    assert t.scale[1] == pytest.approx(ay) and t.offset[1] == pytest.approx(-50 / (0.5 * REF_H))
    ax = ay * (w * REF_H) / (h * REF_W)
    residuals = REF_PIXELS[ids, 0] / REF_W - ax * drv_pixels[ids, 0] / w
    assert abs(np.mean(residuals) - np.median(residuals)) > 1e-2
    assert t.scale[0] == pytest.approx(ax)
    assert t.offset[0] == pytest.approx(np.mean(residuals), abs=1e-12)
