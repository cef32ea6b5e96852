"""StableAnimatorVideoDataset: layout, sampling, value ranges, fallbacks."""

import random

import numpy as np
import pytest
import torch

from diffusers_stableanimator.training import StableAnimatorVideoDataset, list_video_folders, sample_clip

from .conftest import write_video


def test_sample_clip_is_strided_and_reference_outside():
    rng = random.Random(0)
    for _ in range(50):
        clip, reference = sample_clip(100, 16, 4, rng)
        assert len(clip) == 16 and np.all(np.diff(clip) == 4) and reference not in clip
    clip, reference = sample_clip(6, 4, 4, rng)  # short video: the span shrinks to the video
    assert reference not in clip and max(clip) < 6
    with pytest.raises(ValueError, match="more than 4 frames"):
        sample_clip(4, 4, 1, rng)


def test_items_have_the_documented_shapes_and_ranges(video_dataset):
    ds = StableAnimatorVideoDataset(video_dataset / "list.txt", width=32, height=48, num_frames=4, frame_rate=1, seed=0)
    assert len(ds) == 2 and ds.videos == list_video_folders(video_dataset)
    item = ds[0]
    assert item["pixel_values"].shape == (4, 3, 48, 32) and item["pose_pixels"].shape == (4, 3, 48, 32)
    assert item["reference_image"].shape == (3, 48, 32) and item["face_embeds"].shape == (512,)
    assert item["face_masks"].shape == (4, 1, 48, 32)
    for key in ("pixel_values", "pose_pixels", "reference_image"):
        assert -1.0 <= item[key].min() and item[key].max() <= 1.0
    assert 0.0 <= item["face_masks"].min() and item["face_masks"].max() <= 1.0 and item["face_masks"].max() > 0.5
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["face_masks"].shape == (2, 4, 1, 48, 32)


def test_missing_masks_become_ones_of_the_right_shape(tmp_path):
    write_video(tmp_path / "v", num_frames=5, seed=0, masks=False)
    item = StableAnimatorVideoDataset(tmp_path, 64, 64, num_frames=3, frame_rate=1, seed=0)[0]
    assert item["face_masks"].shape == (3, 1, 64, 64) and item["face_masks"].eq(1).all()


def test_missing_face_embedding_is_explained(tmp_path):
    write_video(tmp_path / "v", num_frames=5, seed=0)
    (tmp_path / "v" / "face_embedding.npy").unlink()
    with pytest.raises(FileNotFoundError, match="prepare-dataset"):
        StableAnimatorVideoDataset(tmp_path, 64, 64, num_frames=3)
