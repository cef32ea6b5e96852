"""Shared fixtures: the tiny random pipeline comes from `diffusers_stableanimator.testing` (one builder for
tests, the smoke command and the CLI's `tiny-random` model)."""

import pytest
import torch

from diffusers_stableanimator.testing import synthetic_inputs, tiny_random_components, tiny_random_pipeline

torch.set_num_threads(2)


@pytest.fixture
def tiny_components():
    return tiny_random_components(seed=0)


@pytest.fixture
def tiny_pipe():
    return tiny_random_pipeline(seed=0)


@pytest.fixture
def inputs():
    """Factory: `inputs(num_frames)` -> (image, poses, face_embeds) at 64x64."""
    return synthetic_inputs
