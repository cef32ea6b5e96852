import cv2
import numpy as np
import pytest

from diffusers_stableanimator.preprocessing import PoseFrame, draw_pose
from diffusers_stableanimator.preprocessing.drawing import HAND_EDGES, canvas_size, draw_pose_canvas, hand_edge_color

S = 2160  # output of 2160x2160: the canvas is the output, no resize, so pixels can be checked exactly


def person(points=None, scores=None, faces=None, face_scores=None, hands=None, hand_scores=None, size=(S, S)):
    body = np.zeros((1, 18, 2))
    body_scores = np.zeros((1, 18))
    for j, (x, y) in (points or {}).items():
        body[0, j] = (x, y)
    for j, s in (scores or {}).items():
        body_scores[0, j] = s
    return PoseFrame(
        body, body_scores,
        np.zeros((1, 68, 2)) if faces is None else faces, np.zeros((1, 68)) if face_scores is None else face_scores,
        np.zeros((2, 21, 2)) if hands is None else hands, np.zeros((2, 21)) if hand_scores is None else hand_scores,
        *size,
    )


def px(image, x, y):
    return tuple(int(v) for v in image[int(y * S), int(x * S)])


def test_canvas_short_side_2160():
    assert canvas_size(512, 768) == (2160, 3240)
    assert canvas_size(1080, 1920) == (2160, 3840)
    assert canvas_size(2160, 1000) == (4665, 2160)


def test_limb_colour_is_dimmed_and_joint_colour_is_not():
    pose = person({1: (0.3, 0.5), 2: (0.5, 0.5)}, {1: 1.0, 2: 1.0})
    image = draw_pose(pose)
    assert px(image, 0.4, 0.5) == (153, 0, 0)  # limb 0 red x 0.6
    assert px(image, 0.3, 0.5) == (255, 85, 0)  # joint 1's own colour, undimmed
    assert px(image, 0.5, 0.5) == (255, 170, 0)  # joint 2
    assert px(image, 0.4, 0.51) == (0, 0, 0)  # the stick is only ~4 px thick (S * 0.01 = 21 px away)


def test_limb_and_joint_colours_scale_with_scores():
    image = draw_pose(person({1: (0.3, 0.5), 2: (0.5, 0.5)}, {1: 0.5, 2: 0.8}))
    assert px(image, 0.4, 0.5) == (int(int(255 * 0.5 * 0.8) * 0.6), 0, 0)  # 102 -> 61
    assert px(image, 0.3, 0.5) == (127, 42, 0)  # int(255*0.5), int(85*0.5)
    assert px(image, 0.5, 0.5) == (204, 136, 0)


def test_thresholds_limb_at_0_3_drawn_joint_at_0_3_not():
    image = draw_pose(person({1: (0.3, 0.5), 2: (0.5, 0.5)}, {1: 0.3, 2: 0.3}))
    limb = (int(int(255 * 0.3 * 0.3) * 0.6), 0, 0)  # 22 -> 13
    assert px(image, 0.4, 0.5) == limb
    assert px(image, 0.3, 0.5) == limb  # no joint circle on top: 0.3 is not > 0.3
    image = draw_pose(person({1: (0.3, 0.5), 2: (0.5, 0.5)}, {1: 0.29, 2: 1.0}))
    assert px(image, 0.4, 0.5) == (0, 0, 0)  # limb skipped below 0.3
    assert px(image, 0.5, 0.5) == (255, 170, 0)


def test_shoulder_ear_limbs_are_not_drawn():
    image = draw_pose(person({2: (0.3, 0.5), 16: (0.5, 0.5)}, {2: 1.0, 16: 1.0}))
    assert px(image, 0.4, 0.5) == (0, 0, 0)
    assert px(image, 0.5, 0.5) == (255, 0, 170)  # joint 16's colour


@pytest.mark.parametrize("edge", range(20))
def test_hand_edge_colours_match_opencv_rounding(edge):
    verified = [
        (255, 0, 0), (255, 77, 0), (255, 153, 0), (255, 229, 0), (204, 255, 0), (128, 255, 0), (51, 255, 0),
        (0, 255, 25), (0, 255, 102), (0, 255, 179), (0, 255, 255), (0, 178, 255), (0, 102, 255), (0, 25, 255),
        (51, 0, 255), (128, 0, 255), (204, 0, 255), (255, 0, 230), (255, 0, 153), (255, 0, 77),
    ]
    hands = np.zeros((2, 21, 2))
    hand_scores = np.zeros((2, 21))
    a, b = HAND_EDGES[edge]
    hands[0, a], hands[0, b] = (0.2, 0.5), (0.6, 0.5)
    hand_scores[0, [a, b]] = 1.0
    image = draw_pose(person(hands=hands, hand_scores=hand_scores))
    assert px(image, 0.4, 0.5) == verified[edge]
    assert px(image, 0.2, 0.5) == (0, 0, 255)  # hand points are blue


def test_hand_edge_colour_intensity():
    np.testing.assert_allclose(hand_edge_color(0, 100), (100, 0, 0))
    np.testing.assert_allclose(hand_edge_color(10, 255), (0, 255, 255), atol=1e-9)


def test_face_points_grey_and_no_score_threshold_and_origin_rule():
    faces = np.zeros((1, 68, 2))
    face_scores = np.zeros((1, 68))
    faces[0, 0], face_scores[0, 0] = (0.25, 0.25), 0.5
    faces[0, 1], face_scores[0, 1] = (0.75, 0.25), 0.1  # low score: still drawn, dark
    faces[0, 2], face_scores[0, 2] = (0.0, 0.75), 1.0  # x == 0: not drawn (integer coordinate must be >= 1)
    image = draw_pose(person(faces=faces, face_scores=face_scores))
    assert px(image, 0.25, 0.25) == (127, 127, 127)
    assert px(image, 0.75, 0.25) == (25, 25, 25)
    assert image[int(0.75 * S) - 3 : int(0.75 * S) + 4, :5].max() == 0


def test_resize_is_opencv_bilinear_of_the_2160_canvas():
    pose = person({1: (0.3, 0.4), 2: (0.5, 0.5), 8: (0.4, 0.8)}, {1: 1.0, 2: 0.9, 8: 0.7}, size=(512, 768))
    image = draw_pose(pose)
    assert image.shape == (768, 512, 3)
    canvas = draw_pose_canvas(pose)
    assert canvas.shape == (3240, 2160, 3)
    np.testing.assert_array_equal(image, cv2.resize(canvas, (512, 768), interpolation=cv2.INTER_LINEAR))
    # An anti-aliased (area) downscale is different: the look depends on the filter.
    assert not np.array_equal(image, cv2.resize(canvas, (512, 768), interpolation=cv2.INTER_AREA))
    # Any output size: normalised coordinates map onto it.
    other = draw_pose(pose, 256, 256)
    assert other.shape == (256, 256, 3) and other.max() > 0


def test_multiple_people_and_empty_frame():
    empty = PoseFrame.empty(64, 48)
    assert draw_pose(empty).shape == (48, 64, 3) and draw_pose(empty).max() == 0
    one = person({1: (0.3, 0.5), 2: (0.5, 0.5)}, {1: 1.0, 2: 1.0})
    two = PoseFrame(
        np.concatenate([one.body, one.body + [0, 0.2]]), np.concatenate([one.body_scores] * 2),
        np.zeros((2, 68, 2)), np.zeros((2, 68)), np.zeros((4, 21, 2)), np.zeros((4, 21)), S, S,
    )
    image = draw_pose(two)
    assert px(image, 0.4, 0.5) == (153, 0, 0) and px(image, 0.4, 0.7) == (153, 0, 0)


# The OpenPose palette and the 17 drawn limbs (0-based joints), written out from preprocessing-facts.md section E.
PALETTE = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0), (0, 255, 85),
    (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255),
    (255, 0, 170), (255, 0, 85),
]
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 0),
         (0, 14), (14, 16), (0, 15), (15, 17)]


@pytest.mark.parametrize("limb", range(17))
def test_each_limb_has_its_palette_colour_dimmed(limb):
    a, b = LIMBS[limb]
    canvas = draw_pose_canvas(person({a: (0.3, 0.5), b: (0.5, 0.5)}, {a: 0.2, b: 1.0}))  # a below 0.3: no limb
    assert px(canvas, 0.4, 0.5) == (0, 0, 0)
    canvas = draw_pose_canvas(person({a: (0.3, 0.5), b: (0.5, 0.5)}, {a: 1.0, b: 1.0}))
    assert px(canvas, 0.4, 0.5) == tuple(int(c * 0.6) for c in PALETTE[limb])  # the middle of the stick


@pytest.mark.parametrize("joint", range(18))
def test_each_joint_has_its_palette_colour(joint):
    canvas = draw_pose_canvas(person({joint: (0.5, 0.5)}, {joint: 1.0}))  # alone: no limb, only the joint circle
    assert px(canvas, 0.5, 0.5) == PALETTE[joint]
    assert px(canvas, 0.5, 0.5 + 5 / S) == (0, 0, 0)  # radius 4


def test_joint_scored_exactly_0_3_is_not_drawn_but_0_31_is():
    assert draw_pose_canvas(person({5: (0.5, 0.5)}, {5: 0.3})).max() == 0
    assert px(draw_pose_canvas(person({5: (0.5, 0.5)}, {5: 0.31})), 0.5, 0.5) == (int(85 * 0.31), int(255 * 0.31), 0)  # joint 5: (85, 255, 0) x score


def test_pose_images_are_drawn_at_the_source_size_then_resized_like_the_official_loader():
    """Official path: draw at the source (reference) size, save, load at the output size with PIL's default
    (bicubic) resize. Drawing straight at the output size is a different, thinner picture."""
    from PIL import Image

    from diffusers_stableanimator.preprocessing import render_pose

    pose = person({0: (0.5, 0.2), 1: (0.5, 0.3), 2: (0.4, 0.3), 3: (0.35, 0.45), 5: (0.6, 0.3), 8: (0.45, 0.6), 9: (0.45, 0.8)},
                  {j: 0.9 for j in (0, 1, 2, 3, 5, 8, 9)}, size=(1280, 886))
    source = draw_pose(pose)
    assert source.shape == (886, 1280, 3)
    expected = np.asarray(Image.fromarray(source).resize((512, 512)))  # PIL's default filter, as the official loader
    rendered = render_pose(pose, 512, 512)
    np.testing.assert_array_equal(rendered, expected)
    direct = draw_pose(pose, 512, 512)
    assert (np.abs(direct.astype(int) - expected.astype(int)).max(axis=2) > 0).sum() > 500  # the old path differed
    assert (direct.max(axis=2) > 0).sum() < 0.9 * (expected.max(axis=2) > 0).sum()  # thinner lines
    np.testing.assert_array_equal(render_pose(pose, 1280, 886), source)  # same size: no resize at all
