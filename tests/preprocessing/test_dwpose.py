import math

import cv2
import numpy as np
import pytest

from diffusers_stableanimator.preprocessing import DWPoseDetector, ModelFilesNotFoundError, PoseFrame, load_poses, save_poses
from diffusers_stableanimator.preprocessing.dwpose import (
    box_to_center_scale,
    coco_wholebody_to_openpose,
    crop_matrix,
    crop_to_image,
    multiclass_nms,
    nms,
    select_people,
    simcc_decode,
    yolox_decode,
    yolox_grid,
    yolox_preprocess,
)

from onnx_builders import make_pose_model, make_yolox, standing_person_locs


# ---- SimCC ---------------------------------------------------------------------------------------


def test_simcc_decode_hand_computed():
    x = np.zeros((1, 3, 10))
    y = np.zeros((1, 3, 12))
    x[0, 0, 7], y[0, 0, 4] = 0.8, 0.5  # score = min(0.8, 0.5)
    x[0, 1, 2], x[0, 1, 5] = 0.6, 0.6  # tie: first maximum wins
    y[0, 1, 11] = 0.9
    x[0, 2] -= 0.1  # all non-positive: location -1, divided by 2
    locs, scores = simcc_decode(x, y)
    np.testing.assert_allclose(locs[0, 0], [3.5, 2.0])
    np.testing.assert_allclose(scores[0, 0], 0.5)
    np.testing.assert_allclose(locs[0, 1], [1.0, 5.5])
    np.testing.assert_allclose(scores[0, 1], 0.6)
    np.testing.assert_allclose(locs[0, 2], [-0.5, -0.5])
    assert scores[0, 2] <= 0


# ---- YOLOX ---------------------------------------------------------------------------------------


def test_yolox_grid_order():
    grid, stride = yolox_grid()
    assert grid.shape == (8400, 2)
    assert tuple(grid[1]) == (1, 0) and tuple(grid[80]) == (0, 1) and stride[80] == 8  # row = y*W + x
    assert tuple(grid[6400]) == (0, 0) and stride[6400] == 16
    assert tuple(grid[8000 + 21]) == (1, 1) and stride[8399] == 32


def test_yolox_decode_hand_computed():
    rows = np.zeros((8400, 85))
    r = 2 * 80 + 3  # stride 8, cell (3, 2)
    rows[r, :4] = [0.5, 0.25, math.log(2.0), 0.0]
    rows[r, 4], rows[r, 5 + 7] = 0.5, 0.8
    boxes, scores = yolox_decode(rows[None], ratio=0.5)
    # cx = (0.5+3)*8 = 28, cy = (0.25+2)*8 = 18, w = 16, h = 8 -> (20, 14, 36, 22) / 0.5
    np.testing.assert_allclose(boxes[r], [40, 28, 72, 44])
    assert scores.shape == (8400, 80)
    np.testing.assert_allclose(scores[r, 7], 0.4)
    assert scores[r, 0] == 0


def test_yolox_preprocess_letterbox_top_left_pad_114():
    image = np.full((100, 200, 3), 7, np.uint8)
    blob, ratio = yolox_preprocess(image)
    assert ratio == pytest.approx(3.2)
    assert blob.shape == (3, 640, 640) and blob.dtype == np.float32
    assert (blob[:, :320, :] == 7).all()  # resized image at the top-left, no normalisation
    assert (blob[:, 320:, :] == 114).all()


def test_nms_uses_plus_one_areas():
    # IoU with +1 areas: inter 2x3=6, union 9+9-6=12 -> 0.5 > 0.45 (suppressed);
    # without +1 it would be 2/6 = 0.33 (kept).
    boxes = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [10, 10, 20, 20]], float)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.45) == [0, 2]
    # +1 IoU = 60/140 = 0.43 -> kept
    boxes = np.array([[0, 0, 9, 9], [4, 0, 13, 9]], float)
    assert nms(boxes, np.array([0.5, 0.9]), 0.45) == [1, 0]


def test_multiclass_nms_is_class_aware_then_person_filter():
    boxes = np.array([[0, 0, 100, 100], [2, 2, 100, 100], [0, 0, 100, 100], [300, 300, 400, 400], [500, 0, 600, 50]], float)
    scores = np.zeros((5, 80))
    scores[0, 0] = 0.35  # person
    scores[1, 0] = 0.9  # person overlapping box 0 -> suppresses it
    scores[2, 3] = 0.95  # same box as 0 but another class: kept by class-aware NMS, dropped by the filter
    scores[3, 0] = 0.3  # exactly 0.3: survives NMS (> 0.1) but not the person filter (> 0.3)
    scores[4, 0] = 0.1  # exactly 0.1: removed before NMS
    dets = multiclass_nms(boxes, scores)
    assert dets.shape == (3, 6)
    np.testing.assert_allclose(dets[:, 4], [0.9, 0.3, 0.95])
    np.testing.assert_allclose(dets[:, 5], [0, 0, 3])
    people, people_scores = select_people(dets)
    np.testing.assert_allclose(people, [[2, 2, 100, 100]])
    np.testing.assert_allclose(people_scores, [0.9])


# ---- RTMPose crop --------------------------------------------------------------------------------


def test_box_to_center_scale_padding_and_aspect():
    center, scale = box_to_center_scale((10, 20, 110, 220))  # 100x200 -> 125x250 -> widen to 187.5
    np.testing.assert_allclose(center, [60, 120])
    np.testing.assert_allclose(scale, [187.5, 250])
    center, scale = box_to_center_scale((0, 0, 300, 100))  # 375x125 -> heighten to 500
    np.testing.assert_allclose(scale, [375, 500])


def test_crop_matrix_matches_three_point_affine_and_inverts():
    center, scale = np.array([200.0, 150.0]), np.array([180.0, 240.0])
    src = np.float32([center, center + [0, -scale[0] / 2], center + [-scale[0] / 2, -scale[0] / 2]])
    dst = np.float32([[144, 192], [144, 48], [0, 48]])
    np.testing.assert_allclose(crop_matrix(center, scale), cv2.getAffineTransform(src, dst), atol=1e-4)
    points = np.array([[120.0, 40.0], [290.0, 270.0]])
    m = crop_matrix(center, scale)
    in_crop = points @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(crop_to_image(in_crop, center, scale), points, atol=1e-9)


# ---- MMPose -> OpenPose --------------------------------------------------------------------------


def test_wholebody_to_openpose_remap_and_neck():
    kpts = np.stack([np.arange(133.0), np.arange(133.0) * 10], axis=-1)[None].repeat(2, axis=0)
    scores = np.full((2, 133), 0.9)
    scores[1, 5], scores[1, 6] = 0.3, 0.9  # one shoulder at exactly 0.3: neck invisible
    kpts[1, 5] = [100, 100]
    out, out_scores = coco_wholebody_to_openpose(kpts, scores)
    assert out.shape == (2, 134, 2) and out_scores.shape == (2, 134)
    # Expected by the simultaneous assignment of the reference, written out by hand.
    inserted = np.concatenate([np.arange(17), [-1], np.arange(17, 133)])  # -1 = neck
    expected = inserted.copy()
    expected[[1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]] = inserted[[17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]]
    for j, source in enumerate(expected):
        if source >= 0:
            np.testing.assert_allclose(out[0, j], kpts[0, source])
    # Named joints: 1 neck, 2 R shoulder (COCO 6), 4 R wrist (COCO 10), 14 R eye (COCO 2), 17 L ear (COCO 3)
    np.testing.assert_allclose(out[0, 1], [5.5, 55])
    assert out_scores[0, 1] == 1.0
    np.testing.assert_allclose(out[0, [2, 4, 14, 17], 0], [6, 10, 2, 3])
    np.testing.assert_allclose(out[0, 18:, 0], np.arange(17, 133))  # feet, face, hands keep order
    np.testing.assert_allclose(out[1, 1], [(100 + 6) / 2, (100 + 60) / 2])  # position ignores visibility
    assert out_scores[1, 1] == 0.0


# ---- the detector with generated ONNX models -----------------------------------------------------


def test_detector_known_person(pose_models):
    det, pose = pose_models
    detector = DWPoseDetector(det, pose, device="cpu")
    image = np.zeros((960, 1280, 3), np.uint8)  # ratio 0.5: the 640-space box doubles
    np.testing.assert_allclose(detector.detect_people(image), [[400, 192, 720, 1088]], atol=1e-3)
    frame = detector(image)
    assert isinstance(frame, PoseFrame) and frame.num_people == 1 and (frame.width, frame.height) == (1280, 960)
    # box 320x896 -> padded 400x1120 -> widened to 840x1120, centre (560, 640)
    # nose at model (144, 60): x = 144/288*840 + 560 - 420 = 560, y = 60/384*1120 + 640 - 560 = 255
    np.testing.assert_allclose(frame.body[0, 0] * [1280, 960], [560, 255], atol=1e-3)
    # neck = mean of the shoulders (118, 100) and (170, 100) -> (144, 100)
    np.testing.assert_allclose(frame.body[0, 1] * [1280, 960], [560, 100 / 384 * 1120 + 80], atol=1e-3)
    assert frame.body_scores[0, 1] == 1.0
    np.testing.assert_allclose(frame.body_scores[0, [0, 2]], 0.9, atol=1e-6)
    locs, _ = standing_person_locs()
    np.testing.assert_allclose(frame.faces[0, 0] * [1280, 960], locs[23] / [288, 384] * [840, 1120] + [140, 80], atol=1e-3)
    np.testing.assert_allclose(frame.hands[1, 0] * [1280, 960], locs[112] / [288, 384] * [840, 1120] + [140, 80], atol=1e-3)


def test_detector_no_person_uses_whole_image(model_dir):
    det = make_yolox(model_dir / "yolox_nobody.onnx", [])
    pose = make_pose_model(model_dir / "pose_any.onnx", *standing_person_locs())
    detector = DWPoseDetector(det, pose, device="cpu")
    image = np.zeros((300, 200, 3), np.uint8)
    np.testing.assert_allclose(detector.detect_people(image), [[0, 0, 200, 300]])
    assert detector(image).num_people == 1


@pytest.mark.parametrize("dynamic_batch", [True, False])
def test_detector_several_people_batched_or_not(model_dir, dynamic_batch):
    people = [{"box": (40, 40, 200, 400), "score": 0.5}, {"box": (300, 60, 460, 420), "score": 0.95}]
    det = make_yolox(model_dir / "yolox_two.onnx", people)
    pose = make_pose_model(model_dir / f"pose_{dynamic_batch}.onnx", *standing_person_locs(), dynamic_batch=dynamic_batch)
    detector = DWPoseDetector(det, pose, device="cpu")
    assert detector.pose_batched is dynamic_batch
    image = np.zeros((640, 640, 3), np.uint8)
    np.testing.assert_allclose(detector.detect_people(image), [[300, 60, 460, 420], [40, 40, 200, 400]], atol=1e-3)
    frames = detector.detect_video([image, image, image], batch_size=2)
    assert len(frames) == 3
    frame = frames[2]
    assert frame.num_people == 2 and frame.hands.shape == (4, 21, 2) and frame.faces.shape == (2, 68, 2)
    assert frame.body[0, 0, 0] > 0.5 > frame.body[1, 0, 0]  # most confident (right-hand) person first
    # left hands first, then right hands: hand 1 is person 1's left hand, hand 2 person 0's right hand
    assert frame.hands[1, 0, 0] < 0.5 and frame.hands[2, 0, 0] > 0.5


def test_missing_pose_models_error_names_files(tmp_path):
    with pytest.raises(ModelFilesNotFoundError) as info:
        DWPoseDetector(tmp_path / "yolox_l.onnx", tmp_path / "dw-ll_ucoco_384.onnx")
    message = str(info.value)
    assert "yolox_l.onnx" in message and "dw-ll_ucoco_384.onnx" in message and "yzd-v/DWPose" in message


def test_default_pose_folder_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STABLEANIMATOR_POSE_MODELS", str(tmp_path / "empty"))
    with pytest.raises(ModelFilesNotFoundError, match="empty"):
        DWPoseDetector()


def test_pose_frames_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)

    def frame(n, w, h):
        return PoseFrame(rng.random((n, 18, 2)), rng.random((n, 18)), rng.random((n, 68, 2)), rng.random((n, 68)),
                         rng.random((2 * n, 21, 2)), rng.random((2 * n, 21)), w, h)

    frames = [frame(1, 64, 48), frame(0, 64, 48), frame(2, 32, 80)]
    save_poses(tmp_path / "k.npz", frames, scale=np.array([1.0, 2.0]))
    loaded = load_poses(tmp_path / "k.npz")
    assert [f.num_people for f in loaded] == [1, 0, 2]
    for a, b in zip(frames, loaded):
        assert (a.width, a.height) == (b.width, b.height)
        for name in ("body", "body_scores", "faces", "face_scores", "hands", "hand_scores"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(np.load(tmp_path / "k.npz")["extra_scale"], [1.0, 2.0])
