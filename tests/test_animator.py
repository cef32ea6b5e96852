"""animator.py, the Python API under the commands: the three-line common case, one face analysis per reference,
poses in memory and their folder format, and bad use explained."""

import numpy as np
import pytest
from PIL import Image

from diffusers_stableanimator import Animation, Animator, DrivingPoses, Reference
from diffusers_stableanimator.errors import StableAnimatorError
from diffusers_stableanimator.preprocessing import write_video

FAST = dict(steps=1, tile_size=4, tile_overlap=1)


@pytest.fixture
def files(tmp_path):
    Image.fromarray(np.full((384, 256, 3), 90, np.uint8)).save(tmp_path / "ref.png")
    video = write_video(tmp_path / "driving.mp4", [np.full((240, 320, 3), 20 * i, np.uint8) for i in range(4)], fps=12)
    return tmp_path / "ref.png", video


def test_the_common_case_in_three_lines(files, tmp_path, pose_models, face_models):
    reference, video = files
    det, pose = pose_models
    animator = Animator.load("tiny-random", face_models=face_models, det_model=det, pose_model=pose, device="cpu")
    animation = animator.animate(reference, video, **FAST)
    written = animation.save(tmp_path / "out.mp4", gif=True)
    assert isinstance(animation, Animation) and len(animation.frames) == 4 and animation.fps == pytest.approx(12)
    assert animation.frames[0].size == (64, 128)  # the tiny model's size nearest the 256x384 reference
    assert written == [tmp_path / "out.mp4", tmp_path / "out.gif"] and all(p.is_file() for p in written)
    with pytest.raises(StableAnimatorError, match="exists; choose another out or pass --overwrite"):
        animation.save(tmp_path / "out.mp4")


def test_a_reference_is_analysed_once_at_the_output_size(files, face_models, monkeypatch):
    import cv2

    from diffusers_stableanimator.preprocessing import FaceAnalyzer

    reference, _ = files
    animator = Animator(face_analyzer=FaceAnalyzer(face_models))
    calls = []
    detect = animator.face_analyzer.detect_faces
    monkeypatch.setattr(animator.face_analyzer, "detect_faces", lambda image: (calls.append(image.shape), detect(image))[1])
    prepared = animator.prepare_reference(reference, 64, 128)
    assert isinstance(prepared, Reference) and calls == [(128, 64, 3)]  # one analysis, of the resized reference
    # The training recipe, written out: OpenCV bilinear resize to the output size, BGR analysis.
    resized = cv2.resize(np.asarray(Image.open(reference).convert("RGB")), (64, 128), interpolation=cv2.INTER_LINEAR)
    face = FaceAnalyzer(face_models).analyze(resized)
    np.testing.assert_allclose(prepared.face_embedding, face.embedding, rtol=0, atol=1e-6)
    np.testing.assert_allclose(prepared.face_box, face.bbox * np.array([4, 3, 4, 3]), rtol=1e-6)  # back in 256x384 pixels


def test_poses_in_memory_round_trip_through_the_folder_format(files, tmp_path, pose_models, face_models):
    from diffusers_stableanimator.preprocessing import FaceAnalyzer

    reference, video = files
    det, pose = pose_models
    animator = Animator(face_analyzer=FaceAnalyzer(face_models), det_model=det, pose_model=pose, device="cpu")
    prepared = animator.prepare_reference(reference, 64, 128)
    poses = animator.extract_poses(video, prepared, stride=2)
    assert len(poses.images) == 2 and poses.images[0].size == (64, 128) and poses.fps == pytest.approx(6)
    assert poses.details["margin_source"] == "reference" and all(box is not None for box in poses.face_boxes)
    poses.save(tmp_path / "poses")
    loaded = DrivingPoses.load(tmp_path / "poses", 64, 128)
    assert [np.asarray(a).tolist() == np.asarray(b).tolist() for a, b in zip(loaded.images, poses.images)] == [True, True]
    assert loaded.face_boxes == [tuple(float(v) for v in box) for box in poses.face_boxes]
    with pytest.raises(StableAnimatorError, match="holds earlier outputs; pass --overwrite"):
        poses.save(tmp_path / "poses")


def test_poses_are_drawn_as_the_model_saw_its_training_poses(files, pose_models):
    # The official drawing by default; tiny-puppet was trained on `render_pose_small` (strokes survive at 64 px).
    from diffusers_stableanimator.animator import model_settings
    from diffusers_stableanimator.preprocessing import render_pose, render_pose_small

    _, video = files
    det, pose = pose_models
    drawn = {}
    for renderer in (render_pose, render_pose_small):
        poses = Animator(det_model=det, pose_model=pose, device="cpu", pose_renderer=renderer).extract_poses(video, align=False, width=64, height=64)
        drawn[renderer] = [np.asarray(image) for image in poses.images]
        assert all(np.array_equal(image, renderer(k, 64, 64)) for image, k in zip(drawn[renderer], poses.keypoints))
    assert not all(np.array_equal(a, b) for a, b in zip(*drawn.values()))
    assert Animator().pose_renderer is render_pose
    assert model_settings("tiny-puppet")["pose_renderer"] is render_pose_small
    assert model_settings("tiny-random")["pose_renderer"] is render_pose is model_settings("owner/repo")["pose_renderer"]


def test_tiny_puppet_decodes_whole_videos_whatever_the_memory_preset(files, tiny_pipe, monkeypatch):
    # tiny-puppet was measured decoding whole videos; other models decode in the memory preset's chunks.
    from diffusers_stableanimator.animator import model_settings

    assert model_settings("tiny-puppet")["decode_in_one_chunk"]
    assert not model_settings("tiny-random")["decode_in_one_chunk"] and not model_settings("owner/repo")["decode_in_one_chunk"]
    chunks = []
    decode = type(tiny_pipe).decode_latents
    monkeypatch.setattr(type(tiny_pipe), "decode_latents", lambda self, latents, chunk=None, parallel=None: chunks.append(chunk) or decode(self, latents, chunk, parallel))
    reference, _ = files
    poses = DrivingPoses(images=[Image.new("RGB", (64, 128))] * 5, face_boxes=None, fps=None)
    for one_chunk in (False, True):
        animator = Animator(tiny_pipe, device="cpu", memory="balanced", decode_in_one_chunk=one_chunk)
        # 64x128, not the 576x1024 chosen for this 256x384 reference: the same chunks, in seconds instead of a minute
        animator.animate(animator.prepare_reference(reference, width=64, height=128, allow_no_face=True), poses, **FAST)
    assert chunks == [4, None]  # balanced: 4 frames at a time; None: all at once


def test_bad_use_is_explained(files, tiny_pipe):
    reference, _ = files
    with pytest.raises(StableAnimatorError, match="has no pipeline"):
        Animator().animate(reference, "poses")
    with pytest.raises(StableAnimatorError, match="needs face models"):
        Animator().prepare_reference(reference)
    with pytest.raises(StableAnimatorError, match="face_optimization must be 'auto', 'on' or 'off'"):
        Animator(tiny_pipe, device="cpu").animate(reference, "poses", face_optimization="yes")
    with pytest.raises(StableAnimatorError, match="poses nowhere: no such folder"):
        DrivingPoses.load("nowhere")
    with pytest.raises(StableAnimatorError, match="needs the reference"):
        Animator().extract_poses("driving.mp4")


def test_the_inference_example_runs_on_the_api(files, tmp_path, pose_models, face_models):
    import os
    import subprocess
    import sys
    from pathlib import Path

    reference, video = files
    example = Path(__file__).parents[1] / "examples" / "inference.py"
    env = {**os.environ, "STABLEANIMATOR_POSE_MODELS": str(pose_models[0].parent)}
    result = subprocess.run([sys.executable, str(example), "--model", "tiny-random", "--image", str(reference), "--video", str(video),
                             "--face-models", str(face_models), "--out", str(tmp_path / "example.mp4"), "--steps", "2"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "output size 64x128" in result.stdout and (tmp_path / "example.mp4").is_file()
