import json

import numpy as np
import pytest
from PIL import Image

from diffusers_stableanimator import cli
from diffusers_stableanimator.preprocessing import draw_pose, load_poses, write_video


@pytest.fixture
def inputs(tmp_path):
    """A 6-frame 320x240 driving video and a 256x384 reference photo (the generated models ignore
    the pixels; what matters is the sizes and the plumbing)."""
    frames = [np.full((240, 320, 3), 20 * i, np.uint8) for i in range(6)]
    video = write_video(tmp_path / "driving.mp4", frames, fps=8)
    reference = tmp_path / "ref.png"
    Image.fromarray(np.full((384, 256, 3), 90, np.uint8)).save(reference)
    return video, reference


def base_args(video, reference, out, pose_models):
    det, pose = pose_models
    return ["extract-poses", "--video", str(video), "--reference", str(reference), "--out", str(out),
            "--det-model", str(det), "--pose-model", str(pose), "--device", "cpu"]


def test_extract_poses_end_to_end(tmp_path, inputs, pose_models, capsys):
    video, reference = inputs
    out = tmp_path / "poses"
    assert cli.main(base_args(video, reference, out, pose_models) + ["--stride", "2"]) == 0
    assert "Wrote 3 pose frames (256x384)" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["face_boxes.json", "frame_0.png", "frame_1.png", "frame_2.png", "keypoints.npz", "reference_keypoints.npz"]
    poses = load_poses(out / "keypoints.npz")
    assert len(poses) == 3 and all(p.num_people == 1 and (p.width, p.height) == (256, 384) for p in poses)
    with Image.open(out / "frame_1.png") as image:
        assert image.size == (256, 384) and image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), draw_pose(poses[1]))
        assert np.asarray(image).max() > 0
    # The reference and the driving frames show the same person (constant model outputs) at
    # different frame sizes: alignment maps the driving skeleton onto the reference's.
    reference_pose = load_poses(out / "reference_keypoints.npz")[0]
    visible = [0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    np.testing.assert_allclose(poses[0].body[0, visible] * [256, 384], reference_pose.body[0, visible] * [256, 384], atol=1.0)
    boxes = json.loads((out / "face_boxes.json").read_text())
    assert boxes["width"] == 256 and boxes["height"] == 384 and boxes["margin_source"] == "default"
    assert len(boxes["boxes"]) == 3 and all(b is not None and len(b) == 4 for b in boxes["boxes"])
    x1, y1, x2, y2 = boxes["boxes"][0]
    nose = poses[0].body[0, 0] * [256, 384]
    assert x1 < nose[0] < x2 and y1 < nose[1] < y2


def test_extract_poses_size_no_align_and_overwrite(tmp_path, inputs, pose_models, capsys):
    video, reference = inputs
    out = tmp_path / "poses"
    args = base_args(video, reference, out, pose_models) + ["--max-frames", "4", "--width", "64", "--height", "96"]
    assert cli.main(args) == 0
    assert len(list(out.glob("frame_*.png"))) == 4
    with Image.open(out / "frame_3.png") as image:
        assert image.size == (64, 96)
        # Drawn at the reference's 256x384, then resized with PIL's default filter, as the official path does.
        pose = load_poses(out / "keypoints.npz")[3]
        assert (pose.width, pose.height) == (256, 384)
        expected = np.asarray(Image.fromarray(draw_pose(pose)).resize((64, 96)))
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), expected)
    # a non-empty output folder is refused without --overwrite
    assert cli.main(args) == 2
    assert "holds earlier outputs; pass --overwrite" in capsys.readouterr().err
    # --overwrite replaces the earlier outputs (no stale frames from the longer run)
    assert cli.main(args[:-6] + ["--max-frames", "2", "--no-align", "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("frame_*.png")) == ["frame_0.png", "frame_1.png"]
    raw = load_poses(out / "keypoints.npz")
    assert (raw[0].width, raw[0].height) == (256, 384)
    np.testing.assert_array_equal(np.load(out / "keypoints.npz")["extra_scale"], [1.0, 1.0])


def test_extract_poses_with_face_models_calibrates_margin(tmp_path, inputs, pose_models, face_models):
    video, reference = inputs
    out = tmp_path / "poses"
    assert cli.main(base_args(video, reference, out, pose_models) + ["--max-frames", "1", "--face-models", str(face_models)]) == 0
    boxes = json.loads((out / "face_boxes.json").read_text())
    assert boxes["margin_source"] == "reference"
    # The 256x384 reference is letterboxed with det_scale 640/384: the known face box shrinks by 0.6.
    np.testing.assert_allclose(boxes["reference_box"], np.array([256, 176, 384, 336]) * 0.6, atol=0.01)
    # Frame 0 shows the same (aligned) person as the reference, so its box equals the detector's box: the first
    # pixels inside, and the last ones (x2/y2 are exclusive, one past them), within rounding to whole pixels.
    assert boxes["box_convention"] == "x2/y2 exclusive"
    x1, y1, x2, y2 = boxes["boxes"][0]
    np.testing.assert_allclose([x1, y1, x2 - 1, y2 - 1], boxes["reference_box"], atol=1.5)


def test_extract_poses_errors(tmp_path, inputs, pose_models, capsys):
    video, reference = inputs
    args = base_args(video, reference, tmp_path / "out", pose_models)
    missing = args[:]
    missing[missing.index("--det-model") + 1] = str(tmp_path / "nope" / "yolox_l.onnx")
    assert cli.main(missing) == 2
    assert "yolox_l.onnx" in capsys.readouterr().err
    no_reference = [a for a in args if a not in ("--reference", str(reference))]
    assert cli.main(no_reference) == 2
    assert "--no-align" in capsys.readouterr().err
    assert cli.main(args + ["--width", "64"]) == 2
    assert "--height" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["extract-poses", "--video", str(video)])  # argparse: --out is required
