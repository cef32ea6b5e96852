"""Temporal tiling of long videos, laid out and blended exactly as StableAnimator's reference pipeline."""

from __future__ import annotations

import torch


def temporal_tiles(num_frames: int, tile_size: int, tile_overlap: int) -> list[list[int]]:
    """
    Frame indices of each tile. Every tile holds frame 0 (the frame closest to the reference) plus up to
    `tile_size - 1` consecutive frames; tile starts advance by `tile_size - tile_overlap`, and a last tile is
    aligned to the end of the video if the stride does not reach it. With F=28, T=16, overlap 4:
    `[0..15]`, `[0, 13..27]`.

    A video shorter than one tile is a single tile of all its frames (the reference crashes there).
    `tile_overlap` must be at least 1: the first slot of every tile is frame 0, so with no overlap the frame
    at each tile boundary would be skipped.
    """
    if num_frames <= tile_size:
        return [list(range(num_frames))]
    stride = tile_size - tile_overlap
    tiles = [[0, *range(start + 1, min(start + tile_size, num_frames))] for start in range(0, num_frames - tile_size + 1, stride)]
    if tiles[-1][-1] < num_frames - 1:
        tiles.append([0, *range(num_frames - tile_size + 1, num_frames)])
    return tiles


def blend_weights(tile_length: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Triangular weight of each position inside a tile: `min((k + 0.5) * 2 / T, 2 - (k + 0.5) * 2 / T)`."""
    ramp = (torch.arange(tile_length, device=device, dtype=torch.float64) + 0.5) * 2 / tile_length
    return torch.minimum(ramp, 2 - ramp).to(dtype)
