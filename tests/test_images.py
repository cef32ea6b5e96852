"""images.py: how a user's picture becomes RGB (files, arrays, tensors), and the pipeline's reference size limit."""

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_stableanimator.errors import StableAnimatorError
from diffusers_stableanimator.images import from_array, open_image
from diffusers_stableanimator.pipeline_stableanimator import limit_reference_size
from diffusers_stableanimator.preprocessing._common import load_rgb


def test_16_bit_greyscale_png_is_scaled_not_binarised(tmp_path):
    values = np.linspace(0, 65535, 48 * 32).round().astype(np.uint16).reshape(32, 48)
    PIL.Image.fromarray(values).save(tmp_path / "depth.png")
    assert PIL.Image.open(tmp_path / "depth.png").mode.startswith("I")  # Pillow keeps 16 bits
    rgb = np.asarray(open_image(tmp_path / "depth.png"))
    expected = np.round(values / 257.0).astype(np.uint8)  # 65535 -> 255, 32768 -> 128
    np.testing.assert_array_equal(rgb, np.repeat(expected[:, :, None], 3, axis=2))
    assert len(np.unique(rgb)) > 200  # not two levels


def test_exif_orientation_is_applied_wherever_files_are_read(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red, as stored
    image = PIL.Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": a phone held upright
    image.save(tmp_path / "phone.png", exif=exif)
    upright = np.rot90(pixels, k=-1)  # clockwise, written out independently
    assert np.asarray(open_image(tmp_path / "phone.png")).shape == (40, 20, 3)
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "phone.png")), upright)
    np.testing.assert_array_equal(load_rgb(tmp_path / "phone.png"), upright)  # pose folders and dataset frames too


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = PIL.Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.paste(1, (0, 0, 16, 32))
    image.info["transparency"] = 0
    image.save(tmp_path / "sticker.png", transparency=0)
    rgb = np.asarray(open_image(tmp_path / "sticker.png"))
    assert tuple(rgb[0, 0]) == (10, 200, 30) and tuple(rgb[0, 31]) == (255, 255, 255)


def test_arrays_and_tensors_follow_one_range_rule():
    rng = np.random.default_rng(0)
    uint8 = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    reference = np.asarray(from_array(uint8))
    np.testing.assert_array_equal(reference, uint8)
    np.testing.assert_array_equal(np.asarray(from_array(torch.from_numpy(uint8).permute(2, 0, 1))), uint8)  # uint8 tensor: 0-255
    np.testing.assert_array_equal(np.asarray(from_array(uint8.astype(np.int64))), uint8)  # other integers: 0-255 too
    floats = uint8 / 255.0
    np.testing.assert_array_equal(np.asarray(from_array(floats)), np.round(floats * 255).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(from_array(torch.from_numpy(floats).permute(2, 0, 1))), uint8)


@pytest.mark.parametrize("bad, message", [
    (np.full((8, 8, 3), 2.0), r"float values must lie in \[0, 1\], got 2 to 2; divide 0-255 values by 255"),
    (np.full((8, 8, 3), -0.5), r"float values must lie in \[0, 1\]"),
    (np.full((8, 8, 3), np.nan), "NaN"),
    (np.full((8, 8), 300, np.int32), "integer values must lie in 0-255, got 300 to 300"),
    (torch.full((3, 8, 8), 255.0), r"float values must lie in \[0, 1\]"),
    (np.zeros((8, 8, 2)), r"must be \(H, W\), \(H, W, 3\) or \(H, W, 4\)"),
    (np.full((8, 8, 3), "x"), "expected numbers"),
])
def test_out_of_range_or_odd_arrays_are_refused_not_clipped(bad, message):
    with pytest.raises(StableAnimatorError, match=message):
        from_array(bad, "image")


def test_huge_references_shrink_by_a_whole_factor_and_ordinary_photos_do_not(tiny_pipe, inputs):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (2000, 4000, 3), dtype=np.uint8)
    small = limit_reference_size(PIL.Image.fromarray(pixels), 64, 64, clip_size=224)
    factor = 2  # min(4000 // (4 * 224), 2000 // (4 * 224))
    blocks = pixels.reshape(2000 // factor, factor, 4000 // factor, factor, 3).astype(np.float64).mean(axis=(1, 3))
    assert small.size == (2000, 1000)
    assert np.abs(np.asarray(small).astype(np.float64) - blocks).max() <= 0.5 + 1e-9  # box filter, rounded
    photo = PIL.Image.new("RGB", (1080, 1920))
    assert limit_reference_size(photo, 1024, 576, clip_size=224) is photo
    assert limit_reference_size(PIL.Image.new("RGB", (4000, 3000)), 512, 512, clip_size=224).size == (4000, 3000)

    # The pipeline encodes the shrunk picture: its memory follows the output size, not the photo's.
    seen = []
    encode = tiny_pipe.encode_image
    tiny_pipe.encode_image = lambda image, device: (seen.append(image.size), encode(image, device))[1]
    _, poses, face_embeds = inputs(2)
    big = PIL.Image.fromarray(np.tile(np.asarray(inputs(1)[0]), (30, 30, 1)))  # 1920 x 1920
    tiny_pipe(big, poses, face_embeds=face_embeds, num_inference_steps=1, tile_size=4, tile_overlap=1, output_type="np")
    assert seen == [(275, 275)]  # factor 1920 // (4 * max(64 output, 32 tiny CLIP crop)) = 7; 1920 / 7 rounded up
