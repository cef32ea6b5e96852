"""The commands never lose a user's file, never show a traceback, and refuse bad input before any work.

Each case runs the real command (`cli.main`) on the tiny random model and generated ONNX models, and checks the
exit status, that the error is one line naming the option or file, and that the user's files are untouched.
"""

import json
import os
import signal
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusers_stableanimator.cli import main
from diffusers_stableanimator.testing import synthetic_inputs

FAST = ["--steps", "1", "--tile-size", "4", "--tile-overlap", "1"]


@pytest.fixture
def job(tmp_path, monkeypatch):
    """A reference photo, 3 pose frames, and the user's own files next to them; the current folder is the job's."""
    image, poses, _ = synthetic_inputs(3)
    image.resize((64, 128)).save(tmp_path / "ref.png")
    (tmp_path / "poses").mkdir()
    for i, pose in enumerate(poses):
        pose.resize((64, 128)).save(tmp_path / "poses" / f"frame_{i}.png")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"the user's photo")
    (tmp_path / "notes.txt").write_text("the user's notes")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def animate(*extra, image="ref.png", poses="poses", out="out.mp4"):
    args = ["animate", "--model", "tiny-random", "--image", str(image), "--out", str(out), "--allow-no-face", *FAST]
    if poses is not None:
        args += ["--poses", str(poses)]
    return main(args + list(extra))


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, *expected):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


# ------------------------------------------------------------------------------------------------ 1. never lose a file
@pytest.mark.parametrize("frames_dir, expected", [
    (".", "contains the input --image"),                       # would have deleted the whole current folder
    ("photos", "did not write (holiday.jpg)"),                 # a folder of the user's photos
    ("poses", "is the input --poses"),                         # the input pose folder
])
def test_overwrite_never_replaces_a_folder_of_the_users_files(job, capsys, frames_dir, expected):
    before = snapshot(job)
    assert animate("--frames-dir", frames_dir, "--overwrite") == 2
    one_line_error(capsys, "--frames-dir", expected)
    assert snapshot(job) == before


def test_frames_dir_holding_the_out_file_is_refused(job, capsys):
    assert animate("--frames-dir", "results", out="results/out.mp4") == 2  # an earlier result would go with it
    one_line_error(capsys, "--out", "lies inside --frames-dir")
    assert not (job / "results").exists()


def test_out_equal_to_an_input_is_refused(job, capsys):
    video = job / "driving.mp4"
    video.write_bytes(b"the user's video")
    assert main(["animate", "--model", "tiny-random", "--image", "ref.png", "--video", str(video), "--out", str(video),
                 "--allow-no-face", "--overwrite"]) == 2
    one_line_error(capsys, "--out", "is the input --video")
    assert video.read_bytes() == b"the user's video"
    assert animate("--overwrite", out="poses/out.mp4") == 2
    one_line_error(capsys, "lies inside the input --poses")


def test_existing_outputs_need_overwrite_and_are_replaced_only_when_all_are_complete(job, capsys, monkeypatch):
    assert animate("--gif", "--frames-dir", "frames") == 0
    first = snapshot(job)
    (job / "new").mkdir()
    (job / "new" / "out.gif").write_bytes(b"an earlier gif")
    capsys.readouterr()
    assert animate("--gif", out="new/out.mp4") == 2  # only the gif exists: still refused
    one_line_error(capsys, "--gif", "out.gif exists")
    assert animate("--frames-dir", "frames", out="new/b.mp4") == 2  # only the frames exist
    one_line_error(capsys, "--frames-dir", "pass --overwrite")
    assert (job / "new" / "out.gif").read_bytes() == b"an earlier gif" and not (job / "new" / "b.mp4").exists()

    from diffusers_stableanimator.preprocessing import video_io

    def failing_write_frames(folder, frames, *args, **kwargs):  # the last output fails after the mp4 and gif are done
        raise OSError("disk full")

    monkeypatch.setattr(video_io, "write_frames", failing_write_frames)
    assert animate("--gif", "--frames-dir", "frames", "--overwrite", "--seed", "3") == 2
    one_line_error(capsys, "disk full")
    assert {k: v for k, v in snapshot(job).items() if not k.startswith("new/")} == first  # old mp4, gif and frames kept
    assert not [p for p in job.rglob(".*")]  # no temporary file or folder left


def test_extract_poses_out_equal_to_its_input_frames_is_refused(tmp_path, pose_models, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(np.full((96, 64, 3), 40 * i, np.uint8)).save(frames / f"frame_{i}.png")
    before = snapshot(frames)
    det, pose = pose_models
    assert main(["extract-poses", "--video", str(frames), "--no-align", "--out", str(frames), "--overwrite",
                 "--det-model", str(det), "--pose-model", str(pose), "--device", "cpu"]) == 2
    one_line_error(capsys, "--out", "is the input --video")
    assert snapshot(frames) == before


def test_convert_output_equal_to_the_official_dir_is_refused(tmp_path, capsys):
    official = tmp_path / "checkpoints"
    official.mkdir()
    (official / "unet.pth").write_bytes(b"released weights")
    assert main(["convert", "--official-dir", str(official), "--svd", str(tmp_path / "svd"), "--output", str(official), "--overwrite"]) == 1
    one_line_error(capsys, "--output", "is the input --official-dir")
    assert main(["convert", "--official-dir", str(official), "--svd", str(tmp_path / "svd"), "--output", str(tmp_path), "--overwrite"]) == 1
    one_line_error(capsys, "contains the input --official-dir")
    assert (official / "unet.pth").read_bytes() == b"released weights"


# ------------------------------------------------------------------------------------------------ 2. one-line errors, early
def _png_with_size(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming `width` x `height` (the pixels are never decoded)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_bytes(b""), "cannot be read as an image"),
    (lambda p: p.write_bytes(Path("ref.png").read_bytes()[:200]), "cannot be read as an image"),
    (lambda p: p.write_text("not an image"), "cannot be read as an image"),
    (lambda p: Image.new("RGB", (1, 1)).save(p, format="PNG"), "is 1x1 pixels; it needs at least 32"),
    (lambda p: _png_with_size(p, 15000, 15000), "more than 179 million pixels"),
])
def test_bad_reference_files_are_one_line_errors(job, capsys, make, expected):
    bad = job / "bad.png"
    make(bad)
    assert animate(image=bad) == 2
    one_line_error(capsys, "--image", str(bad), expected)


def test_a_corrupt_pose_frame_names_the_file(job, capsys):
    (job / "poses" / "frame_1.png").write_bytes(b"\x89PNG broken")
    assert animate() == 2
    one_line_error(capsys, "frame_1.png", "cannot be read as an image")


def test_corrupt_onnx_models_name_the_file(job, tmp_path, pose_models, face_models, capsys):
    det, pose = pose_models
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "yolox_l.onnx").write_bytes(b"not onnx")
    assert main(["extract-poses", "--video", "poses", "--no-align", "--out", "out", "--det-model", str(broken / "yolox_l.onnx"),
                 "--pose-model", str(pose), "--device", "cpu"]) == 2
    one_line_error(capsys, "yolox_l.onnx is not a usable ONNX model", "download it again")
    (broken / "scrfd_10g_bnkps.onnx").write_bytes((face_models / "scrfd_10g_bnkps.onnx").read_bytes())
    (broken / "glintr100.onnx").write_bytes((face_models / "glintr100.onnx").read_bytes()[:100])
    assert main(["animate", "--model", "tiny-random", "--image", "ref.png", "--poses", "poses", "--out", "o.mp4",
                 "--face-models", str(broken), *FAST]) == 2
    one_line_error(capsys, "glintr100.onnx is not a usable ONNX model")
    assert not Path("out").exists() and not Path("o.mp4").exists()


@pytest.mark.parametrize("device, expected", [("cuda", "no CUDA GPU"), ("tpu", "use 'cpu', 'cuda' or 'cuda:N'"), ("cuda:x", "is not a device")])
def test_unusable_devices_are_refused_before_any_work(job, capsys, device, expected):
    assert animate("--device", device) == 2
    one_line_error(capsys, "--device", expected)


def test_damaged_or_missing_models_name_the_folder_or_file(job, tiny_pipe, capsys, monkeypatch):
    model = job / "model"
    tiny_pipe.save_pretrained(model)
    capsys.readouterr()
    weights = next((model / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["animate", "--model", str(model), "--image", "ref.png", "--poses", "poses", "--out", "o.mp4", "--allow-no-face"]) == 2
    one_line_error(capsys, str(weights), "damaged", "convert or download the model again")
    (model / "model_index.json").write_text("{ not json")
    assert main(["animate", "--model", str(model), "--image", "ref.png", "--poses", "poses", "--out", "o.mp4", "--allow-no-face"]) == 2
    one_line_error(capsys, "model_index.json is not valid JSON")
    assert main(["animate", "--model", "./typo", "--image", "ref.png", "--poses", "poses", "--out", "o.mp4", "--allow-no-face"]) == 2
    one_line_error(capsys, "--model ./typo: no such folder")

    from diffusers_stableanimator.pipeline_stableanimator import StableAnimatorPipeline

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files,\nand they are not in the cache.")

    monkeypatch.setattr(StableAnimatorPipeline, "from_pretrained", offline)
    assert main(["animate", "--model", "someone/stableanimator", "--image", "ref.png", "--poses", "poses", "--out", "o.mp4", "--allow-no-face", *FAST]) == 2
    one_line_error(capsys, "--model someone/stableanimator could not be loaded", "check the repo id, your network")


def test_unwritable_or_folder_outputs_are_refused_before_generation(job, capsys, monkeypatch):
    from diffusers_stableanimator import animator

    monkeypatch.setattr(animator, "load_pipeline", lambda *a, **k: pytest.fail("the model must not be loaded"))
    assert animate(out="/sys/out.mp4") == 2  # read-only for everyone, root included
    one_line_error(capsys, "--out /sys/out.mp4: cannot write in /sys")
    assert animate(out="photos") == 2
    one_line_error(capsys, "--out photos is a folder; give a file path")
    assert animate("--frames-dir", "/sys/frames") == 2
    one_line_error(capsys, "--frames-dir", "cannot write")
    assert main(["convert", "--official-dir", "x", "--output", "/sys/converted"]) == 1
    one_line_error(capsys, "--output /sys/converted: cannot write in /sys")


@pytest.mark.parametrize("option, value, expected", [
    ("--steps", "0", "--steps must be at least 1"),
    ("--guidance", "nan", "--guidance must be a finite number"),
    ("--guidance", "-1", "--guidance must be a finite number of at least 0"),
    ("--noise-aug-strength", "inf", "--noise-aug-strength must be a finite number"),
    ("--fps", "0", "--fps must be a finite number above 0"),
    ("--width", "100", "--width must be a multiple of 64"),
    ("--stride", "0", "--stride must be at least 1"),
    ("--tile-overlap", "4", "--tile-overlap (4) must be smaller than --tile-size (4)"),
])
def test_numbers_are_checked_in_the_commands_words(job, capsys, option, value, expected):
    extra = [option, value] + (["--height", "128"] if option == "--width" else [])
    assert animate(*extra) == 2
    one_line_error(capsys, expected)


def test_missing_sources_say_what_they_are(job, capsys):
    assert animate(poses="nowhere") == 2
    one_line_error(capsys, "--poses nowhere: no such folder")
    assert main(["animate", "--model", "tiny-random", "--image", "ref.png", "--video", "nowhere.mp4", "--out", "o.mp4", "--allow-no-face"]) == 2
    one_line_error(capsys, "--video nowhere.mp4 does not exist")


def test_pose_folders_with_stray_files_or_mixed_sizes_are_refused(job, capsys):
    (job / "poses" / "notes.txt").write_text("the user's")
    assert animate() == 2
    one_line_error(capsys, "--poses poses holds notes.txt, which is not a pose frame")
    (job / "poses" / "notes.txt").unlink()
    Image.new("RGB", (32, 32)).save(job / "poses" / "frame_1.png")
    assert animate() == 2
    one_line_error(capsys, "frame_1.png is 32x32 but the first frame is 64x128")


def test_bad_face_boxes_file_names_it(job, capsys):
    (job / "poses" / "face_boxes.json").write_text("{ broken")
    assert animate() == 2
    one_line_error(capsys, "face_boxes.json is not a valid face_boxes.json", "run extract-poses again")
    (job / "poses" / "face_boxes.json").write_text(json.dumps({"width": 64, "height": 128, "boxes": [None, None]}))
    assert animate() == 2  # two boxes for three frames: an incomplete extract-poses folder
    one_line_error(capsys, "holds 3 pose frames but face_boxes.json lists 2")


def test_batch_skips_bad_lines_and_failing_jobs_but_runs_the_rest(job, capsys):
    jobs = job / "jobs.jsonl"
    jobs.write_text("\n".join([
        json.dumps(["not", "an", "object"]),
        json.dumps({"image": "ref.png", "poses": "poses", "steps": "two"}),
        json.dumps({"image": "ref.png", "poses": "poses", "memory": "huge"}),
        json.dumps({"image": "ref.png", "poses": "poses", "out": "../escape.mp4"}),
        json.dumps({"image": "missing.png", "poses": "poses", "out": "fails.mp4"}),
        json.dumps({"image": "ref.png", "poses": "poses", "out": "good.mp4"}),
    ]))
    assert main(["animate-batch", str(jobs), "--out-dir", "outs", "--model", "tiny-random", "--allow-no-face", *FAST]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "jobs.jsonl:1: a job is a JSON object" in err
    assert "jobs.jsonl:2: 'steps' must be a whole number" in err
    assert "jobs.jsonl:3: 'memory' must be one of high, balanced, low" in err
    assert "jobs.jsonl:4: 'out' must be a file name" in err
    assert "jobs.jsonl:5: job missing.png" in err and "failed" in err
    assert sorted(p.name for p in (job / "outs").iterdir()) == ["good.mp4"]
    assert not (job / "escape.mp4").exists()


def test_no_traceback_even_for_an_unexpected_error(job, capsys, monkeypatch):
    from diffusers_stableanimator import animator

    monkeypatch.setattr(animator, "load_pipeline", lambda *a, **k: 1 / 0)
    assert animate() == 1
    one_line_error(capsys, "unexpected error: ZeroDivisionError", "STABLEANIMATOR_TRACEBACK=1")


# ------------------------------------------------------------------------------------------------ 4. interrupted runs
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_says_so_in_one_line_and_leaves_the_old_outputs(job, sig):
    (job / "out.mp4").write_bytes(b"old result")
    (job / "frames").mkdir()
    (job / "frames" / "frame_0.png").write_bytes(b"old frame")
    command = [sys.executable, "-c", "import sys; from diffusers_stableanimator.cli import main; sys.exit(main())",
               "animate", "--model", "tiny-random", "--image", "ref.png", "--poses", "poses", "--out", "out.mp4",
               "--frames-dir", "frames", "--gif", "--allow-no-face", "--overwrite", "--steps", "500", "--tile-size", "4", "--tile-overlap", "1"]
    # SIGINT at its default in the child, as in a terminal: a shell starts background jobs (`cmd &`) with it ignored.
    process = subprocess.Popen(command, cwd=job, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stdout:  # printed after the checks, just before the model is built and run
        if line.startswith("Using the tiny random model"):
            break
    import time

    time.sleep(1.5)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    lines = [line for line in err.splitlines() if "it/s]" not in line and "s/it]" not in line and line.strip()]
    assert lines[-1] == "stableanimator animate: interrupted; unfinished outputs were not written.", err
    assert "Traceback" not in err
    assert (job / "out.mp4").read_bytes() == b"old result" and not (job / "out.gif").exists()
    assert snapshot(job / "frames") == {"frame_0.png": b"old frame"}
    assert not [p for p in job.rglob(".*")]


def test_an_interrupted_extract_poses_leaves_no_pose_folder(tmp_path, pose_models, monkeypatch, capsys):
    from diffusers_stableanimator.preprocessing import keypoints

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(np.full((96, 64, 3), 40 * i, np.uint8)).save(frames / f"frame_{i}.png")

    def interrupted(*args, **kwargs):  # Ctrl-C after the pose frames, while the keypoints are being saved
        raise KeyboardInterrupt

    monkeypatch.setattr(keypoints, "save_poses", interrupted)
    det, pose = pose_models
    assert main(["extract-poses", "--video", str(frames), "--no-align", "--out", str(tmp_path / "poses"),
                 "--det-model", str(det), "--pose-model", str(pose), "--device", "cpu"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


# ------------------------------------------------------------------------------------------------ 5. files like every other tool
def test_outputs_follow_the_umask_and_no_unactionable_noise(job, face_models):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # a user's default: FutureWarnings show
    command = [sys.executable, "-c", "import os, sys; os.umask(0o022); from diffusers_stableanimator.cli import main; sys.exit(main())",
               "animate", "--model", "tiny-random", "--image", "ref.png", "--poses", "poses", "--out", "out.mp4", "--gif",
               "--frames-dir", "frames", "--face-models", str(face_models), "--dtype", "fp16", *FAST]
    result = subprocess.run(command, cwd=job, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Output size")  # something is said at once
    for noise in ("torchvision", "kept in float32", "FutureWarning", "Traceback"):
        assert noise not in result.stderr + result.stdout, noise
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(job / "out.mp4") == 0o644 and mode(job / "out.gif") == 0o644
    assert mode(job / "frames") == 0o755 and mode(job / "frames" / "frame_0.png") == 0o644


def test_smoke_says_what_it_does_before_the_work(capsys):
    assert main(["smoke", "--model", "tiny-random", "--frames", "2", "--steps", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Checking the install: 2 frames, 1 denoising steps") and "frames are noise" in out[1]
