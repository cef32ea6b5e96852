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


def write_indexed_video(folder, num_frames, size=16, plain_names=False):
    """Solid frames whose brightness encodes their index: frame i = 20 i (red), pose i = 20 i (green), mask i = 20 i."""
    from PIL import Image

    for sub in ("images", "poses", "faces"):
        (folder / sub).mkdir(parents=True)
    for i in range(num_frames):
        name = f"{i}.png" if plain_names else f"frame_{i}.png"
        Image.new("RGB", (size, size), (20 * i, 0, 255 - 20 * i)).save(folder / "images" / name)
        Image.new("RGB", (size, size), (0, 20 * i, 0)).save(folder / "poses" / name)
        Image.new("L", (size, size), 20 * i).save(folder / "faces" / name)
    np.save(folder / "face_embedding.npy", np.arange(512, dtype=np.float32))


def _index(channel):
    """The single value of a solid channel."""
    values = torch.unique(channel)
    assert values.numel() == 1, "expected a solid frame"
    return values.item()


@pytest.mark.parametrize("plain_names", [False, True])
@pytest.mark.parametrize("num_frames, frame_rate", [(4, 3), (3, 1), (5, 2)])
def test_poses_and_masks_are_paired_with_their_frames(tmp_path, plain_names, num_frames, frame_rate):
    length = 12  # two-digit names: frame_10 must sort after frame_9
    write_indexed_video(tmp_path / "v", length, plain_names=plain_names)
    ds = StableAnimatorVideoDataset(tmp_path, width=16, height=16, num_frames=num_frames, frame_rate=frame_rate, seed=0)
    seen_starts = set()
    for _ in range(15):
        item = ds[0]
        frames = [round((_index(f[0]) + 1) * 127.5 / 20) for f in item["pixel_values"]]
        poses = [round((_index(p[1]) + 1) * 127.5 / 20) for p in item["pose_pixels"]]
        masks = [round(_index(m[0]) * 255 / 20) for m in item["face_masks"]]
        reference = round((_index(item["reference_image"][0]) + 1) * 127.5 / 20)
        # the decoded values are exactly the encoded ones (integer data, exact)
        assert [(_index(f[0]) + 1) * 127.5 for f in item["pixel_values"]] == pytest.approx([20 * i for i in frames], abs=1e-3)
        assert poses == frames and masks == frames
        assert frames == list(range(frames[0], frames[0] + num_frames * frame_rate, frame_rate))  # strided, in order
        assert 0 <= frames[0] and frames[-1] < length
        assert 0 <= reference < length and reference not in frames
        # the blue channel of each frame agrees (255 - 20 i): the whole image is that frame
        assert [round(255 - (_index(f[2]) + 1) * 127.5) for f in item["pixel_values"]] == [20 * i for i in frames]
        seen_starts.add(frames[0])
    assert len(seen_starts) > 1  # the start is random
