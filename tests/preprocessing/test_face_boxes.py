import numpy as np
import pytest
from PIL import Image

from diffusers_stableanimator.preprocessing import (
    FaceBoxMargin,
    PoseFrame,
    box_to_mask,
    face_box_from_mask,
    face_box_from_pose,
    face_boxes_from_masks,
    face_boxes_from_poses,
)


def face_frame(points, width=100, height=200, scores=None):
    """One person whose 68 face landmarks are spread over `points` (normalised) in turn."""
    points = np.asarray(points, dtype=np.float64)
    faces = points[np.arange(68) % len(points)][None]
    face_scores = np.ones((1, 68)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(1, 68)
    return PoseFrame(np.zeros((1, 18, 2)), np.zeros((1, 18)), faces, face_scores,
                     np.zeros((2, 21, 2)), np.zeros((2, 21)), width, height)


CORNERS = [(0.4, 0.2), (0.6, 0.2), (0.4, 0.4), (0.6, 0.4), (0.5, 0.3)]  # pixels x 40..60, y 40..80


def test_box_from_landmarks_with_margin_hand_computed():
    margin = FaceBoxMargin(left=0.1, top=0.5, right=0.1, bottom=0.0)
    # width 20, height 40: x1 = 40 - 2, y1 = 40 - 20, x2 = 60 + 2, y2 = 80
    assert face_box_from_pose(face_frame(CORNERS), margin=margin) == (38, 20, 63, 81)
    # Output twice the frame size: everything doubles.
    assert face_box_from_pose(face_frame(CORNERS), 200, 400, margin=margin) == (76, 40, 125, 161)


def test_calibrated_margin_reproduces_detector_box_on_reference():
    reference = face_frame(CORNERS)
    detector_box = (35.0, 22.0, 63.0, 83.0)
    margin = FaceBoxMargin.calibrate(reference, detector_box)
    assert margin.left == pytest.approx(0.25) and margin.top == pytest.approx(0.45)
    assert face_box_from_pose(reference, margin=margin) == (35, 22, 64, 84)


def test_frames_without_face_get_none_and_boxes_are_clipped():
    no_face = face_frame(CORNERS, scores=np.zeros(68))
    few = np.zeros(68)
    few[:4] = 1.0  # only 4 visible points: not a face
    assert face_boxes_from_poses([no_face, face_frame(CORNERS, scores=few), PoseFrame.empty(100, 200)]) == [None, None, None]
    outside = face_frame([(1.5, 1.5), (1.7, 1.5), (1.5, 1.7), (1.7, 1.7), (1.6, 1.6)])
    assert face_box_from_pose(outside) is None
    edge = face_frame([(0.9, 0.9), (1.2, 0.9), (0.9, 1.2), (1.2, 1.2), (1.0, 1.0)])
    assert face_box_from_pose(edge, margin=FaceBoxMargin(0, 0, 0, 0)) == (90, 180, 100, 200)


def soft_mask(width=100, height=80):
    """255 inside x 20..39, y 10..29, with anti-aliased edges: 64 just outside left/top, 191 just
    outside right/bottom (above the 127.5 threshold)."""
    mask = np.zeros((height, width), np.uint8)
    mask[10:30, 20:40] = 255
    mask[10:30, 19] = 64
    mask[9, 20:40] = 64
    mask[10:30, 40] = 191
    mask[30, 20:40] = 191
    return mask


def test_mask_threshold_not_equality():
    assert face_box_from_mask(soft_mask()) == (20, 10, 41, 31)
    assert face_box_from_mask(soft_mask(), threshold=200) == (20, 10, 40, 30)


def test_mask_rescaled_to_output_size():
    # pixels 20..40 (x) of a 100-wide mask cover [20, 41); at 200 wide that is [40, 82), x2 exclusive
    assert face_box_from_mask(soft_mask(), 200, 160) == (40, 20, 82, 62)
    assert face_box_from_mask(soft_mask(), 50, 40) == (10, 5, 21, 16)


def test_mask_inputs_rgb_float_path_and_empty(tmp_path):
    rgb = np.repeat(soft_mask()[:, :, None], 3, axis=2)
    assert face_box_from_mask(rgb) == (20, 10, 41, 31)
    assert face_box_from_mask(soft_mask() / 255.0) == (20, 10, 41, 31)
    Image.fromarray(soft_mask()).save(tmp_path / "m.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert face_boxes_from_masks([tmp_path / "m.png", tmp_path / "rgb.png"], 200, 160) == [(40, 20, 82, 62)] * 2
    assert face_box_from_mask(np.zeros((10, 10), np.uint8)) is None
    with pytest.raises(FileNotFoundError):
        face_box_from_mask(tmp_path / "missing.png")


def test_box_to_mask_round_trip():
    box = (3, 5, 18, 10)  # 15 x 5 pixels, x2/y2 exclusive
    mask = box_to_mask(box, 32, 24)
    assert mask.shape == (24, 32) and mask.dtype == np.uint8 and mask.sum() == 255 * 15 * 5
    assert face_box_from_mask(mask) == box
    assert box_to_mask(None, 4, 4).max() == 0


def test_default_margin_adds_35_percent_of_the_height_above_and_5_percent_elsewhere():
    """docs/preprocessing.md: the default margin adds 35 % of the landmark box's height above, 5 % on the other sides."""
    from diffusers_stableanimator.preprocessing import DEFAULT_FACE_BOX_MARGIN

    assert DEFAULT_FACE_BOX_MARGIN == FaceBoxMargin(left=0.05, top=0.35, right=0.05, bottom=0.05)
    # landmarks x 40..70, y 40..70 px (w = h = 30): x1 = 40 - 1.5, y1 = 40 - 10.5, x2 = 70 + 1.5, y2 = 70 + 1.5,
    # then floor / ceil to whole pixels
    pose = face_frame([(0.4, 0.2), (0.7, 0.2), (0.4, 0.35), (0.7, 0.35), (0.55, 0.3)])
    assert face_box_from_pose(pose) == (38, 29, 73, 73)  # x2/y2 exclusive
    assert face_boxes_from_poses([pose], 200, 400) == [(77, 59, 144, 144)]  # all doubled: 77.0, 59.0, 143.0, 143.0


def test_face_points_scored_exactly_0_3_do_not_count():
    assert face_box_from_pose(face_frame(CORNERS, scores=np.full(68, 0.3))) is None
    assert face_box_from_pose(face_frame(CORNERS, scores=np.full(68, 0.31))) is not None


def test_read_face_boxes_makes_the_inclusive_file_boxes_exclusive_and_scales_them(tmp_path):
    import json

    from diffusers_stableanimator.preprocessing import read_face_boxes

    path = tmp_path / "face_boxes.json"
    path.write_text(json.dumps({"width": 100, "height": 80, "boxes": [[10, 20, 29, 39], None, [0, 0, 99, 79]]}))
    assert read_face_boxes(path) == [(10, 20, 30, 40), None, (0, 0, 100, 80)]
    # At another output size the pixel spans [x1, x2 + 1) scale: 200 x 40 is x2 and y/2.
    assert read_face_boxes(path, 200, 40) == [(20, 10, 60, 20), None, (0, 0, 200, 40)]
    # Files that record the package's convention are already exclusive: no +1.
    path.write_text(json.dumps({"width": 100, "height": 80, "box_convention": "x2/y2 exclusive", "boxes": [[10, 20, 30, 40], None]}))
    assert read_face_boxes(path) == [(10, 20, 30, 40), None]
