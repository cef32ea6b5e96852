import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from diffusers_stableanimator.animate import SUPPORTED_SIZES, choose_resolution
from diffusers_stableanimator.cli import main
from diffusers_stableanimator.testing import synthetic_inputs

FAST = ["--steps", "2", "--tile-size", "4", "--tile-overlap", "1"]


@pytest.fixture
def job(tmp_path):
    """A reference photo and a folder of 5 pose frames."""
    image, poses, _ = synthetic_inputs(5)
    image.resize((300, 560)).save(tmp_path / "ref.png")
    (tmp_path / "poses").mkdir()
    for i, pose in enumerate(poses):
        pose.save(tmp_path / "poses" / f"frame_{i}.png")
    return tmp_path


def _mp4_info(path):
    reader = imageio.get_reader(str(path), format="FFMPEG")
    frames = [frame for frame in reader]
    fps = reader.get_meta_data()["fps"]
    reader.close()
    return len(frames), frames[0].shape, fps


def test_resolution_rule():
    assert choose_resolution(1080, 1920) == (576, 1024)  # portrait phone video
    assert choose_resolution(1000, 1000) == (512, 512)
    assert choose_resolution(1920, 1080) == (512, 512)  # landscape: nearest supported is square
    assert choose_resolution(700, 1000) == (576, 1024)  # aspect 0.70: log-distance 0.22 to 0.5625, 0.36 to 1
    assert choose_resolution(800, 1000) == (512, 512)  # aspect 0.80: 0.35 vs 0.22
    assert SUPPORTED_SIZES == [(512, 512), (576, 1024)]


def test_animate_tiny_random_end_to_end(job, capsys):
    out = job / "out.mp4"
    args = ["animate", "--model", "tiny-random", "--image", str(job / "ref.png"), "--poses", str(job / "poses"),
            "--out", str(out), "--allow-no-face", "--fps", "5", "--gif", "--frames-dir", str(job / "frames"), *FAST]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Output size 64x128" in printed  # 300x560 is nearest the portrait aspect ratio
    assert f"wrote {out}" in printed
    count, shape, fps = _mp4_info(out)
    assert count == 5 and shape == (128, 64, 3) and fps == pytest.approx(5)
    assert (job / "out.gif").is_file()
    assert sorted(p.name for p in (job / "frames").iterdir()) == [f"frame_{i}.png" for i in range(5)]
    assert not [p for p in job.iterdir() if p.name.startswith(".")]  # no temporary files left behind

    before = out.read_bytes()
    assert main(args) == 2  # refuses to overwrite
    assert "exists; choose another --out or pass --overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main(args + ["--overwrite", "--seed", "1"]) == 0
    assert out.read_bytes() != before


@pytest.mark.parametrize("preset", ["high", "balanced", "low"])
def test_each_memory_preset_runs(job, preset):
    out = job / f"{preset}.mp4"
    assert main(["animate", "--model", "tiny-random", "--image", str(job / "ref.png"), "--poses", str(job / "poses"),
                 "--out", str(out), "--allow-no-face", "--memory", preset, "--width", "64", "--height", "64", *FAST]) == 0
    assert _mp4_info(out)[:2] == (5, (64, 64, 3))


def test_unsupported_size_warns_and_max_frames(job, capsys):
    out = job / "out.mp4"
    assert main(["animate", "--model", "tiny-random", "--image", str(job / "ref.png"), "--poses", str(job / "poses"),
                 "--out", str(out), "--allow-no-face", "--width", "128", "--height", "64", "--max-frames", "3", *FAST]) == 0
    assert "not a size the model was trained at" in capsys.readouterr().err
    assert _mp4_info(out)[:2] == (3, (64, 128, 3))


def test_errors_are_one_line_and_name_the_problem(job, capsys):
    base = ["animate", "--image", str(job / "ref.png"), "--poses", str(job / "poses"), "--allow-no-face", *FAST]
    not_a_pipeline = job / "model"
    not_a_pipeline.mkdir()
    assert main(base + ["--model", str(not_a_pipeline), "--out", str(job / "a.mp4")]) == 2
    assert "no model_index.json" in capsys.readouterr().err
    (not_a_pipeline / "model_index.json").write_text(json.dumps({"_class_name": "StableAnimatorPipeline", "unet": ["x", "y"]}))
    assert main(base + ["--model", str(not_a_pipeline), "--out", str(job / "a.mp4")]) == 2
    assert "missing pipeline component(s): vae, image_encoder" in capsys.readouterr().err

    empty = job / "empty"
    empty.mkdir()
    assert main(["animate", "--model", "tiny-random", "--image", str(job / "ref.png"), "--poses", str(empty),
                 "--out", str(job / "b.mp4"), "--allow-no-face"]) == 2
    assert "No image files" in capsys.readouterr().err
    assert main(["animate", "--model", "tiny-random", "--image", str(job / "ref.png"), "--poses", str(job / "poses"),
                 "--out", str(job / "c.mp4")]) == 2
    assert "--face-models" in capsys.readouterr().err
    assert not list(job.glob("*.mp4"))


def test_animate_batch_skips_done_jobs_and_loads_the_model_once(job, capsys, monkeypatch):
    from diffusers_stableanimator import animator

    loads = []
    load_pipeline = animator.load_pipeline
    monkeypatch.setattr(animator, "load_pipeline", lambda *a, **k: (loads.append(a[0]), load_pipeline(*a, **k))[1])
    jobs = job / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(j) for j in [
        {"image": str(job / "ref.png"), "poses": str(job / "poses"), "out": "one.mp4"},
        {"image": str(job / "ref.png"), "poses": str(job / "poses"), "out": "two.mp4", "max_frames": 2},
        {"image": str(job / "ref.png"), "poses": str(job / "poses"), "out": "three.mp4", "max_frames": 3},
    ]))
    out_dir = job / "outs"
    out_dir.mkdir()
    (out_dir / "one.mp4").write_bytes(b"done before")
    assert main(["animate-batch", str(jobs), "--out-dir", str(out_dir), "--model", "tiny-random", "--allow-no-face", *FAST]) == 0
    assert "3 jobs, 1 already done, 0 invalid, 2 to run" in capsys.readouterr().out
    assert (out_dir / "one.mp4").read_bytes() == b"done before"
    assert _mp4_info(out_dir / "two.mp4")[0] == 2 and _mp4_info(out_dir / "three.mp4")[0] == 3
    assert loads == ["tiny-random"]  # one load serves both jobs

    jobs.write_text(json.dumps({"image": "x.png", "video": "a.mp4", "poses": "p"}))
    assert main(["animate-batch", str(jobs), "--out-dir", str(out_dir), "--model", "tiny-random"]) == 1
    assert "exactly one of 'video' or 'poses'" in capsys.readouterr().err


def test_animate_from_a_driving_video_with_face_models(tmp_path, pose_models, face_models, capsys, monkeypatch):
    """The whole path with generated ONNX models: DWPose, alignment, drawing, face boxes, face embedding,
    face optimisation on the tiny pipeline (which has a face recognizer), mp4 out."""
    from PIL import Image

    from diffusers_stableanimator.preprocessing import face_analysis, write_video

    loads = []

    class CountingFaceAnalyzer(face_analysis.FaceAnalyzer):
        def __init__(self, *args, **kwargs):
            loads.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(face_analysis, "FaceAnalyzer", CountingFaceAnalyzer)

    video = write_video(tmp_path / "driving.mp4", [np.full((240, 320, 3), 20 * i, np.uint8) for i in range(6)], fps=12)
    Image.fromarray(np.full((384, 256, 3), 90, np.uint8)).save(tmp_path / "ref.png")
    det, pose = pose_models
    out = tmp_path / "out.mp4"
    assert main(["animate", "--model", "tiny-random", "--image", str(tmp_path / "ref.png"), "--video", str(video),
                 "--out", str(out), "--det-model", str(det), "--pose-model", str(pose), "--face-models", str(face_models),
                 "--stride", "2", "--face-optimization", "on", "--device", "cpu", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "Output size 64x128" in printed and "Face optimisation off" not in printed
    assert "Face optimisation on (asked for); its steps take longer." in printed
    count, shape, fps = _mp4_info(out)
    assert count == 3 and shape == (128, 64, 3) and fps == pytest.approx(6)  # 12 fps with stride 2
    assert len(loads) == 1  # one load serves the face-box calibration and the embedding


def test_driving_video_without_a_person_or_unreadable_is_an_error(tmp_path, capsys):
    from onnx_builders import make_pose_model, make_yolox, standing_person_locs
    from PIL import Image

    from diffusers_stableanimator.preprocessing import write_video

    video = write_video(tmp_path / "driving.mp4", [np.full((240, 320, 3), 60, np.uint8)] * 3, fps=8)
    Image.fromarray(np.full((384, 256, 3), 90, np.uint8)).save(tmp_path / "ref.png")
    locs, _ = standing_person_locs()
    det = make_yolox(tmp_path / "yolox_l.onnx", [])  # nobody: DWPose falls back to the whole frame
    pose = make_pose_model(tmp_path / "dw-ll_ucoco_384.onnx", locs, np.zeros(133, np.float32))  # and sees no joint
    args = ["animate", "--model", "tiny-random", "--image", str(tmp_path / "ref.png"), "--allow-no-face", "--no-align",
            "--det-model", str(det), "--pose-model", str(pose), "--device", "cpu", *FAST]
    assert main(args + ["--video", str(video), "--out", str(tmp_path / "a.mp4")]) == 2
    assert "No person was detected" in capsys.readouterr().err

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert main(args + ["--video", str(broken), "--out", str(tmp_path / "b.mp4")]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    # Missing face models are reported before the (slow) pose extraction starts.
    no_face_args = [a for a in args if a != "--allow-no-face"]
    assert main(no_face_args + ["--video", str(broken), "--out", str(tmp_path / "c.mp4")]) == 2
    err = capsys.readouterr().err
    assert "--face-models" in err and "broken.mp4" not in err
    assert not list(tmp_path.glob("?.mp4"))
