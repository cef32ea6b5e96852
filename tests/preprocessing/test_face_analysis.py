import os

import insightface
import numpy as np
import pytest
from PIL import Image

from diffusers_stableanimator.preprocessing import FaceAnalyzer, ModelFilesNotFoundError, NoFaceDetectedError, onnx_providers
from diffusers_stableanimator.errors import StableAnimatorError
from onnx_builders import KNOWN_FACE, KNOWN_FACE_BOX, make_recognizer, make_scrfd, recognizer_weights

IMAGES = os.path.join(os.path.dirname(insightface.__file__), "data", "images")
RGB = (200, 100, 50)


def uniform_image(size=640):
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = RGB
    return image


def expected_embedding(channels):
    """The tiny recognizer: mean of each normalised input channel @ W + b. insightface feeds the
    network RGB when given BGR, so `channels` is what the network sees."""
    w, b = recognizer_weights()
    return (np.array(channels, np.float64) - 127.5) / 127.5 @ w + b


@pytest.fixture(scope="module")
def analyzer(face_models):
    return FaceAnalyzer(face_models, device="cpu")


def test_known_face_box_landmarks_and_raw_embedding(analyzer):
    face = analyzer.analyze(uniform_image())
    np.testing.assert_allclose(face.bbox, KNOWN_FACE_BOX, atol=1e-3)
    np.testing.assert_allclose(face.landmarks[2], [320, 256 + 0.2 * 32], atol=1e-3)  # nose
    assert face.score == pytest.approx(0.9)
    assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
    # Training convention (BGR to insightface): the network sees the true RGB channels.
    np.testing.assert_allclose(face.embedding, expected_embedding(RGB), atol=1e-3)
    assert abs(np.linalg.norm(face.embedding) - 1) > 0.1  # raw, not L2-normalised


def test_rgb_parity_mode_swaps_channels(face_models):
    rgb_mode = FaceAnalyzer(face_models, device="cpu", color_order="rgb")
    embedding = rgb_mode.get_embedding(uniform_image())
    np.testing.assert_allclose(embedding, expected_embedding(RGB[::-1]), atol=1e-3)
    with pytest.raises(ValueError, match="color_order"):
        FaceAnalyzer(face_models, color_order="RGB ")


def test_insightface_photo_as_path_pil_and_array(analyzer):
    path = os.path.join(IMAGES, "t1.jpg")  # 1280x886: det_scale = 443/886 = 0.5, boxes double
    pil = Image.open(path)
    by_path = analyzer.analyze(path)
    np.testing.assert_allclose(by_path.bbox, np.array(KNOWN_FACE_BOX) * 2, atol=1e-2)
    np.testing.assert_allclose(analyzer.get_embedding(pil), by_path.embedding)
    np.testing.assert_allclose(analyzer.get_embedding(np.asarray(pil.convert("RGB"))), by_path.embedding)
    # the aligned 112x112 crop shipped with insightface also works as an input image (face small or not)
    assert analyzer.get_embedding(os.path.join(IMAGES, "Tom_Hanks_54745.png")).shape == (512,)


def test_largest_face_wins_not_most_confident(tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    small = {"stride": 16, "cell": (5, 5), "dist": (1.0, 1.0, 1.0, 1.0), "score": 0.99}
    make_scrfd(folder / "scrfd_10g_bnkps.onnx", [small, KNOWN_FACE])
    make_recognizer(folder / "glintr100.onnx")
    faces = FaceAnalyzer(folder, device="cpu").detect_faces(uniform_image())
    assert len(faces) == 2
    np.testing.assert_allclose(faces[0].bbox, KNOWN_FACE_BOX, atol=1e-3)
    np.testing.assert_allclose(faces[1].bbox, [64, 64, 96, 96], atol=1e-3)


def test_no_face(tmp_path):
    folder = tmp_path / "none"
    folder.mkdir()
    make_scrfd(folder / "scrfd_10g_bnkps.onnx", [])
    make_recognizer(folder / "glintr100.onnx")
    analyzer = FaceAnalyzer(folder, device="cpu")
    with pytest.raises(NoFaceDetectedError, match="allow_no_face"):
        analyzer.get_embedding(uniform_image())
    assert issubclass(NoFaceDetectedError, ValueError)
    with pytest.warns(UserWarning, match="zero face embedding"):
        embedding = analyzer.get_embedding(uniform_image(), allow_no_face=True)
    assert embedding.shape == (512,) and not embedding.any()
    assert analyzer.analyze(uniform_image(), allow_no_face=True) is None


def test_missing_and_incomplete_model_folders(tmp_path, monkeypatch):
    with pytest.raises(ModelFilesNotFoundError, match="does not exist.*scrfd_10g_bnkps.onnx.*antelopev2"):
        FaceAnalyzer(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFilesNotFoundError) as info:
        FaceAnalyzer(empty)
    assert "scrfd_10g_bnkps.onnx" in str(info.value) and "glintr100.onnx" in str(info.value)
    assert "non-commercial" in str(info.value)
    make_recognizer(empty / "glintr100.onnx")
    with pytest.raises(ModelFilesNotFoundError) as info:
        FaceAnalyzer(empty)
    listed = [line for line in str(info.value).splitlines() if line.startswith("  - ")]
    assert len(listed) == 1 and listed[0].endswith("scrfd_10g_bnkps.onnx")
    monkeypatch.setenv("STABLEANIMATOR_FACE_MODELS", str(tmp_path / "from_env"))
    with pytest.raises(FileNotFoundError, match="from_env"):
        FaceAnalyzer()


def test_providers_follow_torch_device(monkeypatch):
    import onnxruntime
    import torch

    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert onnx_providers(None) == ["CPUExecutionProvider"]  # listed but no GPU: onnxruntime-gpu on a CPU box
    with pytest.raises(StableAnimatorError, match="torch sees no CUDA"):
        onnx_providers("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert onnx_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert onnx_providers(torch.device("cpu")) == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(StableAnimatorError, match="onnxruntime-gpu"):
        onnx_providers("cuda")
    with pytest.raises(ValueError, match="device must be"):
        onnx_providers("mps")
