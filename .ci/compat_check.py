"""The oldest transformers and diffusers that setup.cfg allows load a folder saved with the newest (issue 12).

    python .ci/compat_check.py save FOLDER   # in the newest environment: the tiny pipeline and its output
    python .ci/compat_check.py load FOLDER   # in the oldest one: the same weights, the same output, dtype=, DiffusionPipeline

Run by .ci/oldest-versions, which builds the oldest environment from setup.cfg's lower bounds.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

TOLERANCE = 5e-4  # the tolerance of the suite's reload tests: ~30x the measured noise of BLAS on unaligned weights


def call(pipe):
    from diffusers_stableanimator.testing import synthetic_inputs

    image, poses, face_embeds = synthetic_inputs(4)
    return pipe(image, poses, face_embeds=face_embeds, num_inference_steps=2, tile_size=4, tile_overlap=1,
                output_type="np", generator=torch.Generator().manual_seed(0)).frames[0]


def save(folder: Path) -> None:
    from diffusers_stableanimator.testing import tiny_random_pipeline

    pipe = tiny_random_pipeline()
    pipe.save_pretrained(folder)
    np.save(folder.parent / "expected.npy", call(pipe))


def load(folder: Path) -> None:
    import diffusers
    import transformers
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file

    from diffusers_stableanimator import StableAnimatorPipeline

    print(f"transformers {transformers.__version__}, diffusers {diffusers.__version__}; "
          f"feature_extractor recorded as {json.loads((folder / 'model_index.json').read_text())['feature_extractor']}")
    pipe = DiffusionPipeline.from_pretrained(folder)
    assert type(pipe) is StableAnimatorPipeline, type(pipe)
    for name in ("unet", "vae", "pose_net", "face_encoder", "face_recognizer", "image_encoder"):
        saved = load_file(next((folder / name).glob("*.safetensors")))
        loaded = getattr(pipe, name).state_dict()
        assert all(torch.equal(loaded[key], value) for key, value in saved.items()), f"{name}: weights differ from the saved files"
    difference = float(np.abs(call(pipe) - np.load(folder.parent / "expected.npy")).max())
    assert difference <= TOLERANCE, f"output differs from the newest environment's by {difference}"
    half = StableAnimatorPipeline.from_pretrained(folder, dtype=torch.float16)
    assert half.unet.dtype == half.image_encoder.dtype == torch.float16, (half.unet.dtype, half.image_encoder.dtype)
    print(f"ok: same weights, output within {difference:.1e} of the newest environment's, dtype= honoured")


if __name__ == "__main__":
    {"save": save, "load": load}[sys.argv[1]](Path(sys.argv[2]))
