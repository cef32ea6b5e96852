"""Fixtures for the training tests: a saved tiny random pipeline and a folder of tiny synthetic videos."""

from pathlib import Path

import numpy as np
import pytest
from example_scripts import load_example
from PIL import Image, ImageDraw

from diffusers_stableanimator.testing import TINY_SIZE, tiny_random_pipeline



@pytest.fixture(scope="session")
def train_script():
    """examples/train_stableanimator.py imported as a module (its `main(argv)` runs in-process)."""
    return load_example("train_stableanimator.py")


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_pipeline")
    tiny_random_pipeline(seed=0).save_pretrained(path)
    return path


def write_video(folder: Path, num_frames: int, seed: int, size: int = TINY_SIZE, masks: bool = True) -> None:
    """Frames (a moving coloured square on noise), stick-figure poses, face masks and a face embedding."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "poses", "faces"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        frame = rng.integers(0, 64, (size, size, 3), dtype=np.uint8)
        x = 8 + 2 * i
        frame[16:32, x : x + 16] = (200, 150, 100)
        Image.fromarray(frame).save(folder / "images" / f"frame_{i}.png")
        pose = Image.new("RGB", (size, size))
        ImageDraw.Draw(pose).line([(x + 8, 16), (x + 8, 56)], fill=(255, 0, 0), width=2)
        pose.save(folder / "poses" / f"frame_{i}.png")
        if masks:
            mask = np.zeros((size, size), dtype=np.uint8)
            mask[16:32, x : x + 16] = 255
            Image.fromarray(mask).save(folder / "faces" / f"frame_{i}.png")
    np.save(folder / "face_embedding.npy", (rng.standard_normal(512) * 20).astype(np.float32))


@pytest.fixture(scope="session")
def video_dataset(tmp_path_factory):
    """Two 6-frame videos in a folder of videos, plus a list file naming them."""
    root = tmp_path_factory.mktemp("videos")
    for k in range(2):
        write_video(root / f"video_{k}", num_frames=6, seed=k)
    (root / "list.txt").write_text("video_0\nvideo_1\n")
    return root
