"""`stableanimator evaluate` end to end on a tiny dataset, `--compare`, and the one-line errors for bad input."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx_builders import make_recognizer, scrfd_outputs, KNOWN_FACE
from test_i3d import random_state
from test_lpips import published_like_files

from diffusers_stableanimator.cli import main
from diffusers_stableanimator.evaluation import metrics as M
from diffusers_stableanimator.evaluation.identity import cosine
from diffusers_stableanimator.preprocessing.face_analysis import FaceAnalyzer
from diffusers_stableanimator.preprocessing.video_io import read_frames, write_frames, write_video

pytest.importorskip("insightface")


def make_brightness_scrfd(path):
    """An SCRFD-like detector that reports KNOWN_FACE in bright images and nothing in dark ones: every score is
    scaled by relu(mean of the normalised input), about +1 for white and about -1 (so 0) for black."""
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["m"], keepdims=0), helper.make_node("Relu", ["m"], ["gain"])]
    inits, outputs = [], []
    for i, value in enumerate(scrfd_outputs([KNOWN_FACE])):
        inits.append(numpy_helper.from_array(value, f"const_{i}"))
        op = "Mul" if i < 3 else "Add"  # scores scale with brightness; boxes and landmarks stay put
        other = "gain" if i < 3 else "zero"
        nodes.append(helper.make_node(op, [f"const_{i}", other], [f"out_{i}"]))
        outputs.append(helper.make_tensor_value_info(f"out_{i}", TensorProto.FLOAT, list(value.shape)))
    nodes.append(helper.make_node("Mul", ["m", "zero_f"], ["zero"]))
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"))
    graph = helper.make_graph(nodes, "bright_scrfd", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def eval_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_models")
    published_like_files(folder)
    torch.save(random_state(), folder / "i3d_pretrained_400.pt")
    faces = folder / "antelopev2"
    faces.mkdir()
    make_brightness_scrfd(faces / "scrfd_10g_bnkps.onnx")
    make_recognizer(faces / "glintr100.onnx")
    return folder


def bright(rng, frames=4, size=64):
    return [rng.integers(190, 256, (size, size, 3), dtype=np.uint8) for _ in range(frames)]


def noisy(frames, rng, amount=20):
    return [np.clip(f.astype(int) + rng.integers(-amount, amount + 1, f.shape), 0, 255).astype(np.uint8) for f in frames]


@pytest.fixture
def dataset(tmp_path):
    """real/ and generated/: `dance` (PNG frames), `clip` (mp4) and `noface` (generated frames are black)."""
    rng = np.random.default_rng(0)
    real, generated = tmp_path / "real", tmp_path / "generated"
    dance = bright(rng)
    write_frames(real / "dance", dance)
    write_frames(generated / "dance", noisy(dance, rng))
    clip = bright(rng)
    write_video(real / "clip.mp4", clip)
    write_video(generated / "clip.mp4", noisy(clip, rng))
    write_frames(real / "noface", bright(rng))
    write_frames(generated / "noface", [np.zeros((64, 64, 3), np.uint8) + 10 for _ in range(4)])
    return tmp_path


def evaluate(capsys, *args):
    code = main(["evaluate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_all_metrics_end_to_end(dataset, eval_models, capsys):
    out_json = dataset / "results.json"
    code, out, err = evaluate(
        capsys, "--generated", dataset / "generated", "--real", dataset / "real", "--out", out_json,
        "--eval-models", eval_models, "--face-models", eval_models / "antelopev2", "--device", "cpu",
        "--model", "tiny", "--seed", 3, "--max-frames", 2,
    )
    assert code == 0, err
    results = json.loads(out_json.read_text())
    assert results["model"] == "tiny" and results["seed"] == 3 and results["package_version"]
    assert results["settings"]["fvd_clip_frames"] == 16 and results["settings"]["metrics"] == ["l1", "psnr", "psnr_star", "ssim", "lpips", "csim", "fvd"]
    videos = results["videos"]
    assert list(videos) == ["clip", "dance", "noface"]

    # pixel metrics: the per-video mean of the formulas on the frames as read back
    gen = read_frames(dataset / "generated" / "dance", max_frames=2)
    real = read_frames(dataset / "real" / "dance", max_frames=2)
    for metric, function in (("l1", M.l1), ("psnr", M.psnr), ("psnr_star", M.psnr_star), ("ssim", M.ssim)):
        assert videos["dance"][metric] == pytest.approx(np.mean([function(g, r) for g, r in zip(gen, real)]))
    assert results["overall"]["frames"] == 6
    files = {"clip": "clip.mp4", "dance": "dance", "noface": "noface"}
    all_l1 = [M.l1(g, r) for f in files.values() for g, r in zip(read_frames(dataset / "generated" / f, max_frames=2), read_frames(dataset / "real" / f, max_frames=2))]
    assert results["overall"]["l1"] == pytest.approx(np.mean(all_l1))

    # CSIM: cosine of the tiny recognizer's embeddings of the first real frame and each generated frame
    analyzer = FaceAnalyzer(eval_models / "antelopev2", device="cpu")
    reference = analyzer.get_embedding(real[0])
    expected = np.mean([cosine(reference, analyzer.get_embedding(g)) for g in gen])
    assert videos["dance"]["csim"] == pytest.approx(expected, rel=1e-5)
    assert videos["dance"]["csim_frames_without_face"] == []
    assert videos["noface"]["csim"] is None and videos["noface"]["csim_frames_without_face"] == [0, 1]
    assert results["overall"]["csim_frames_without_face"] == 2
    assert any("2 generated frame(s) without a detected face" in note for note in results["notes"])

    # LPIPS is a finite distance per video; FVD one number over 3 whole-video samples
    assert all(v["lpips"] > 0 for v in videos.values())
    assert results["overall"]["fvd_samples"] == 3 and np.isfinite(results["overall"]["fvd"])
    # the table: one row per video and the overall row, and the notes
    assert "PSNR*" in out and "FVD" in out and "overall" in out and "noface" in out and "results written to" in out

    # --compare of a run with itself: zero differences, no settings warning
    code, out, err = evaluate(capsys, "--compare", out_json, out_json)
    assert code == 0 and "+0.0000" in out and "warning" not in out


def test_compare_prints_differences_and_differing_settings(dataset, capsys):
    a, b = dataset / "a.json", dataset / "b.json"
    base = ["--generated", dataset / "generated", "--real", dataset / "real", "--metrics", "l1,psnr,ssim"]
    assert evaluate(capsys, *base, "--out", a)[0] == 0
    assert evaluate(capsys, *base, "--out", b, "--max-frames", 2)[0] == 0
    code, out, err = evaluate(capsys, "--compare", a, b)
    assert code == 0
    values = {json.loads(p.read_text())["overall"]["psnr"] for p in (a, b)}
    assert "PSNR" in out and "better" in out and "max_frames (None vs 2)" in out and len(values) == 2
    assert evaluate(capsys, *base, "--out", a)[2].count("\n") == 1  # exists: refused without --overwrite
    assert evaluate(capsys, *base, "--out", a, "--overwrite")[0] == 0


def one_line_error(capsys, *args):
    code, out, err = evaluate(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "error:" in err, err
    return err


def test_bad_input_is_one_line_naming_the_file(dataset, tmp_path, capsys):
    gen, real = dataset / "generated", dataset / "real"
    cheap = ["--metrics", "l1"]
    # missing extractor files: named, with where to get them, before any video is read
    err = one_line_error(capsys, "--generated", gen, "--real", real, "--metrics", "fvd", "--eval-models", tmp_path)
    assert "i3d_pretrained_400.pt is missing" in err and "--eval-models" in err
    # different frame counts
    (gen / "dance" / "frame_3.png").unlink()
    err = one_line_error(capsys, "--generated", gen, "--real", real, *cheap)
    assert "has 3 frames" in err and "has 4" in err and str(gen / "dance") in err and "--max-frames" in err
    write_frames(gen / "dance", [np.zeros((64, 64, 3), np.uint8)] * 4)
    # different sizes
    write_frames(gen / "noface", [np.zeros((32, 64, 3), np.uint8)] * 4)
    err = one_line_error(capsys, "--generated", gen, "--real", real, *cheap)
    assert "64x32" in err and "64x64" in err and str(gen / "noface") in err and "resize" in err
    write_frames(gen / "noface", [np.zeros((64, 64, 3), np.uint8)] * 4)
    # a video that cannot be read
    (gen / "clip.mp4").write_bytes(b"not a video")
    err = one_line_error(capsys, "--generated", gen, "--real", real, *cheap)
    assert str(gen / "clip.mp4") in err and "cannot be read" in err
    # a video folder without frames
    (gen / "clip.mp4").unlink()
    (gen / "clip").mkdir()
    err = one_line_error(capsys, "--generated", gen, "--real", real, *cheap)
    assert str(gen / "clip") in err and "No image files" in err
    (gen / "clip").rmdir()
    # missing pair
    err = one_line_error(capsys, "--generated", gen, "--real", real, *cheap)
    assert "--real" in err and "clip" in err and "paired by name" in err
    # an empty folder
    empty = tmp_path / "empty"
    empty.mkdir()
    err = one_line_error(capsys, "--generated", empty, "--real", real, *cheap)
    assert str(empty) in err and "holds no videos" in err
    # unknown metric, output inside an input, bad --compare file
    assert "unknown metric fid" in one_line_error(capsys, "--generated", gen, "--real", real, "--metrics", "l1,fid")
    assert "--out" in one_line_error(capsys, "--generated", gen, "--real", real, *cheap, "--out", real / "r.json")
    (tmp_path / "bad.json").write_text("{")
    assert "bad.json is not a readable JSON file" in one_line_error(capsys, "--compare", tmp_path / "bad.json", tmp_path / "bad.json")


def test_self_driven_protocol_generates_then_scores(tmp_path, face_models, capsys):
    """--dataset: each test video is animated from its first frame with its own poses (tiny random model), into
    --generated as PNG frames, then scored; the protocol's settings are recorded."""
    rng = np.random.default_rng(5)
    dataset, poses = tmp_path / "test_videos", tmp_path / "poses"
    for name in ("one", "two"):
        write_frames(dataset / name, bright(rng, frames=2))
        write_frames(poses / name, [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)])
    generated, out_json = tmp_path / "outs", tmp_path / "results.json"
    code, out, err = evaluate(
        capsys, "--dataset", dataset, "--dataset-poses", poses, "--model", "tiny-random", "--generated", generated,
        "--steps", 2, "--metrics", "l1,psnr_star,csim", "--face-models", face_models, "--device", "cpu", "--out", out_json,
    )
    assert code == 0, err
    assert sorted(p.name for p in generated.iterdir()) == ["one", "two"]
    assert len(list((generated / "one").glob("frame_*.png"))) == 2
    results = json.loads(out_json.read_text())
    assert results["model"] == "tiny-random" and results["seed"] == 42
    assert results["settings"]["self_driven"]["steps"] == 2 and results["overall"]["frames"] == 4
    assert results["overall"]["csim"] is not None
    # the folder must be new or empty; poses must exist for every video
    err = one_line_error(capsys, "--dataset", dataset, "--dataset-poses", poses, "--model", "tiny-random", "--generated", generated, "--metrics", "l1")
    assert "is not empty" in err
    (poses / "two" / "frame_0.png").unlink(), (poses / "two" / "frame_1.png").unlink()
    err = one_line_error(capsys, "--dataset", dataset, "--dataset-poses", poses, "--model", "tiny-random", "--generated", tmp_path / "new", "--metrics", "l1")
    assert "no pose frames for the video two" in err and "extract-poses" in err and not (tmp_path / "new").exists()


def test_references_folder_sets_the_csim_reference(dataset, face_models, tmp_path, capsys):
    refs = tmp_path / "refs"
    refs.mkdir()
    rng = np.random.default_rng(9)
    from PIL import Image

    photos = {name: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for name in ("clip", "dance", "noface")}
    for name, photo in photos.items():
        Image.fromarray(photo).save(refs / f"{name}.png")
    out_json = tmp_path / "r.json"
    args = ["--generated", dataset / "generated", "--real", dataset / "real", "--metrics", "csim", "--max-frames", 1,
            "--face-models", face_models, "--device", "cpu", "--out", out_json]
    code, out, err = evaluate(capsys, *args, "--references", refs)
    assert code == 0, err
    results = json.loads(out_json.read_text())
    analyzer = FaceAnalyzer(face_models, device="cpu")
    generated = read_frames(dataset / "generated" / "dance", max_frames=1)[0]
    expected = cosine(analyzer.get_embedding(photos["dance"]), analyzer.get_embedding(generated))
    assert results["videos"]["dance"]["csim"] == pytest.approx(expected, rel=1e-5)
    assert results["settings"]["csim_reference"] == "--references images"
    (refs / "clip.png").unlink()
    err = one_line_error(capsys, *args, "--overwrite", "--references", refs)
    assert "--references" in err and "clip" in err
