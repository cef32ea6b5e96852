import numpy as np
import pytest
from PIL import Image

from diffusers_stableanimator.cli import main
from diffusers_stableanimator.preprocessing import write_video
from diffusers_stableanimator.training import StableAnimatorVideoDataset
from diffusers_stableanimator.training.prepare_dataset import face_mask


class _Face:
    def __init__(self, bbox):
        self.bbox = bbox


def test_face_mask_is_the_union_of_inclusive_truncated_boxes_or_all_white():
    mask = face_mask([_Face((1.7, 2.2, 3.9, 4.0)), _Face((-3.0, 6.5, 0.2, 7.9))], width=8, height=10)
    expected = np.zeros((10, 8), np.uint8)
    expected[2:5, 1:4] = 255  # int() truncation, both corners inclusive
    expected[6:8, 0:1] = 255  # clipped at the image border
    np.testing.assert_array_equal(mask, expected)
    assert (face_mask([], 4, 3) == 255).all()


def test_prepare_dataset_builds_the_training_layout(tmp_path, pose_models, face_models, capsys):
    videos = tmp_path / "raw"
    videos.mkdir()
    for name in ("a", "b"):
        write_video(videos / f"{name}.mp4", [np.full((240, 320, 3), 15 * i, np.uint8) for i in range(8)], fps=8)
    det, pose = pose_models
    out = tmp_path / "dataset"
    args = ["prepare-dataset", str(videos), "--out", str(out), "--det-model", str(det), "--pose-model", str(pose),
            "--face-models", str(face_models), "--stride", "2", "--width", "64", "--height", "64", "--device", "cpu"]
    assert main(args) == 0
    assert (out / "videos.txt").read_text() == "a\nb\n"
    for name in ("a", "b"):
        for folder in ("images", "poses", "faces"):
            files = sorted(p.name for p in (out / name / folder).iterdir())
            assert files == [f"frame_{i}.png" for i in range(4)]
        with Image.open(out / name / "poses" / "frame_0.png") as skeleton:
            assert skeleton.size == (320, 240) and np.asarray(skeleton).max() > 0
        with Image.open(out / name / "faces" / "frame_0.png") as mask:
            values = np.unique(np.asarray(mask))
        assert mask.mode == "L" and set(values) == {0, 255}  # the generated detector finds one face
        assert np.load(out / name / "face_embedding.npy").shape == (512,)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    dataset = StableAnimatorVideoDataset(out / "videos.txt", width=64, height=64, num_frames=2, frame_rate=1, seed=0)
    item = dataset[0]
    assert item["pixel_values"].shape == (2, 3, 64, 64) and item["face_masks"].shape == (2, 1, 64, 64)

    # The embedding follows the training recipe, written out here: the frame with the largest face (the generated
    # detector finds the same face in every frame, so the first) resized with OpenCV's bilinear resize, then BGR.
    import cv2

    from diffusers_stableanimator.preprocessing import FaceAnalyzer, read_frames

    first = read_frames(videos / "a.mp4", stride=2)[0]
    expected = FaceAnalyzer(face_models).get_embedding(cv2.resize(first, (64, 64), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_allclose(np.load(out / "a" / "face_embedding.npy"), expected, rtol=0, atol=1e-5)

    capsys.readouterr()
    assert main(args) == 0  # a second run skips what is done
    assert capsys.readouterr().out.count("already prepared") == 2
    (out / "b" / "notes.txt").write_text("the user's")
    assert main(args + ["--overwrite"]) == 1  # b holds a file prepare-dataset does not write: skipped, kept
    assert "holds files prepare-dataset does not write (notes.txt)" in capsys.readouterr().err
    assert (out / "b" / "notes.txt").read_text() == "the user's"
    (out / "b" / "notes.txt").unlink()
    (out / "b" / "images" / "notes.txt").write_text("the user's")  # deeper inside: kept too
    assert main(args + ["--overwrite"]) == 1
    assert "does not write (images/notes.txt)" in capsys.readouterr().err
    assert (out / "b" / "images" / "notes.txt").read_text() == "the user's"
