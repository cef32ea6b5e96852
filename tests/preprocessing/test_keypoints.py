import numpy as np

from diffusers_stableanimator.preprocessing import PoseFrame


def test_a_joint_scored_exactly_0_3_is_not_visible():
    """The official `subset != -1` test is score > 0.3 (the drawing's joint test): exactly 0.3 is not visible."""
    scores = np.zeros((2, 18))
    scores[0, :5] = [0.3, 0.3000001, 0.29, 1.0, 0.0]
    scores[1, 0] = 0.3
    pose = PoseFrame(np.zeros((2, 18, 2)), scores, np.zeros((2, 68, 2)), np.zeros((2, 68)),
                     np.zeros((4, 21, 2)), np.zeros((4, 21)), 64, 64)
    expected = np.zeros((2, 18), bool)
    expected[0, [1, 3]] = True
    np.testing.assert_array_equal(pose.body_visible, expected)
    assert not pose.body_visible[1].any()  # a person whose best joint scores 0.3 shows nothing
