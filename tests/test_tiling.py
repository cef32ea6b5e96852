import torch

from diffusers_stableanimator.tiling import blend_weights, temporal_tiles


def _reference_tiles(num_frames, tile_size, tile_overlap):
    # The reference layout, written out independently (valid for num_frames >= tile_size).
    tiles = []
    start = 0
    while start <= num_frames - tile_size:
        tiles.append([0] + list(range(start + 1, min(start + tile_size, num_frames))))
        start += tile_size - tile_overlap
    if tiles[-1][-1] < num_frames - 1:
        tiles.append([0] + list(range(num_frames - tile_size + 1, num_frames)))
    return tiles


def test_documented_example():
    assert temporal_tiles(28, 16, 4) == [[0, *range(1, 16)], [0, *range(13, 28)]]


def test_matches_reference_layout_and_covers_every_frame():
    for num_frames in range(16, 80):
        for overlap in (1, 4, 8, 15):
            tiles = temporal_tiles(num_frames, 16, overlap)
            assert tiles == _reference_tiles(num_frames, 16, overlap)
            assert all(len(tile) == 16 and tile[0] == 0 for tile in tiles)
            assert set().union(*tiles) == set(range(num_frames))


def test_short_video_is_one_tile():
    assert temporal_tiles(5, 16, 4) == [[0, 1, 2, 3, 4]]
    assert temporal_tiles(16, 16, 4) == [list(range(16))]


def test_triangular_weights_for_16():
    expected = [0.0625, 0.1875, 0.3125, 0.4375, 0.5625, 0.6875, 0.8125, 0.9375]
    torch.testing.assert_close(blend_weights(16), torch.tensor(expected + expected[::-1]))
    torch.testing.assert_close(blend_weights(3), torch.tensor([1 / 3, 1.0, 1 / 3]))


def test_layouts_listed_by_hand():
    # F=20, T=16, overlap 4: the stride 12 does not reach the end, so a last tile is aligned to it.
    assert temporal_tiles(20, 16, 4) == [[0, *range(1, 16)], [0, *range(5, 20)]]
    # F=7, T=4, overlap 1: starts 0 and 3, then the stride stops; the end is reached already.
    assert temporal_tiles(7, 4, 1) == [[0, 1, 2, 3], [0, 4, 5, 6]]
    # F=9, T=4, overlap 2: starts 0, 2, 4; then a tile aligned to the end.
    assert temporal_tiles(9, 4, 2) == [[0, 1, 2, 3], [0, 3, 4, 5], [0, 5, 6, 7], [0, 6, 7, 8]]
    assert blend_weights(4).tolist() == [0.25, 0.75, 0.75, 0.25]
    assert blend_weights(2).tolist() == [0.5, 0.5]
