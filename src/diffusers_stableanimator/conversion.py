"""Official StableAnimator checkpoints (``.pth`` pickles + an SVD-xt folder) -> a diffusers pipeline folder.

    stableanimator convert --official-dir checkpoints/Animation \\
        --svd stabilityai/stable-video-diffusion-img2vid-xt --output stableanimator-diffusers

Every dimension is read from the tensors and the SVD configs, loading is strict (missing, unexpected or
mis-shaped keys are errors), the result is verified by reloading it, and the output folder appears only once
it is complete. ``push_to_hub`` publishes a converted folder with a model card. See ``docs/conversion.md``.

Module top imports only the standard library: ``stableanimator --help`` imports this module to build its parser.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import string
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import StableAnimatorError
from .outputs import StagedOutputs, check_not_inputs, check_writable, foreign_entries, shown

# Released file names, per pipeline component.
OFFICIAL_FILES = {"unet": "unet.pth", "pose_net": "pose_net.pth", "face_encoder": "face_encoder.pth"}
RECOGNIZER_FILE = "glintr100_torch.pth"  # optional: only face optimisation (HJB) needs it
# Folders (relative to --official-dir) searched for the files: the official `checkpoints/` tree or `Animation/` itself.
OFFICIAL_SUBDIRS = ("", "Animation")
OFFICIAL_HUB_REPO = "FrancisRing/StableAnimator"  # where the authors publish the .pth files

SVD_REPO = "stabilityai/stable-video-diffusion-img2vid-xt"
# What the converter reads from SVD: the UNet's config only (unet.pth replaces all its weights), full-precision
# weights of the VAE and CLIP encoder, and the small configs. No .bin duplicates, fp16 variants or single files.
SVD_ALLOW_PATTERNS = [
    "model_index.json",
    "LICENSE.md",
    "unet/config.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "image_encoder/config.json",
    "image_encoder/model.safetensors",
    "feature_extractor/*",
    "scheduler/*",
]
SVD_SUBFOLDERS = ("unet", "vae", "image_encoder", "feature_extractor", "scheduler")

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
PROVENANCE_FILE = "stableanimator_conversion.json"
MODEL_CARD_TEMPLATE = "stableanimator.md"
# Head width of the released face encoder's Perceiver; the weights only fix heads * dim_head.
REFERENCE_DIM_HEAD = 64
_MAX_LISTED_KEYS = 20


class ConversionError(StableAnimatorError):
    """A checkpoint or folder is not what the converter expects; the message says what to do."""


# ------------------------------------------------------------------------------------------------ finding inputs
def find_official_files(official_dir: str | os.PathLike) -> dict[str, Path | None]:
    """Locate the released files under `official_dir` (or its `Animation/` sub-folder). The recognizer is optional."""
    root = Path(official_dir).expanduser()
    if not root.is_dir():
        raise ConversionError(f"--official-dir {root} is not a folder. {_expected_layout()}")

    def locate(name: str) -> Path | None:
        for sub in OFFICIAL_SUBDIRS:
            if (root / sub / name).is_file():
                return root / sub / name
        return None

    found = {component: locate(name) for component, name in OFFICIAL_FILES.items()}
    missing = [OFFICIAL_FILES[c] for c, path in found.items() if path is None]
    if missing:
        raise ConversionError(f"Missing {', '.join(missing)} in {root} (looked in {root} and {root / 'Animation'}). {_expected_layout()}")
    found["face_recognizer"] = locate(RECOGNIZER_FILE)
    return found


def _expected_layout() -> str:
    return (
        "Expected the released files under their original names, either directly in the folder or in its "
        "`Animation/` sub-folder: pose_net.pth, face_encoder.pth, unet.pth, and optionally glintr100_torch.pth "
        f"(the face recognizer, needed only for face optimisation). Get them with `git lfs install && git clone "
        f"https://huggingface.co/{OFFICIAL_HUB_REPO}` or `hf download {OFFICIAL_HUB_REPO} --local-dir checkpoints` (`huggingface-cli download` with huggingface_hub < 1.0)."
    )


def resolve_svd(svd: str | os.PathLike, revision: str | None = None) -> tuple[Path, dict]:
    """A local SVD-xt folder, or a Hub repo id fetched with `snapshot_download` (only what conversion reads)."""
    path = Path(svd).expanduser()
    if path.is_dir():
        source = {"source": "local folder", "name": path.resolve().name}
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", str(svd)):
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(str(svd), revision=revision, allow_patterns=SVD_ALLOW_PATTERNS))
        except Exception as error:  # offline, gated repo without a token, wrong id...
            raise ConversionError(
                f"--svd {svd} is not a local folder, and downloading it from the Hub failed: {error}. Accept the SVD "
                f"licence on https://huggingface.co/{svd}, log in with `hf auth login`, or pass a local folder."
            ) from error
        source = {"source": "hub", "repo_id": str(svd), "revision": path.name}  # snapshot folders are named by commit
    else:
        raise ConversionError(f"--svd {svd} is neither a folder nor a Hub repo id (owner/name), e.g. {SVD_REPO}.")

    missing = [sub for sub in SVD_SUBFOLDERS if not (path / sub).is_dir() or not any((path / sub).glob("*.json"))]
    if missing:
        raise ConversionError(
            f"The SVD folder {path} lacks {', '.join(f'{m}/' for m in missing)}. Expected a diffusers-format "
            f"img2vid-xt folder ({SVD_REPO}) with {', '.join(f'{s}/' for s in SVD_SUBFOLDERS)} (unet/ needs only config.json)."
        )
    return path, source


# ------------------------------------------------------------------------------------------------ reading .pth
def load_official_state_dict(path: str | os.PathLike) -> dict:
    """`torch.load(weights_only=True)` of a released file, with readable errors for the usual broken downloads."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist. {_expected_layout()}")
    with open(path, "rb") as f:
        head = f.read(512)
    in_repo = f"Animation/{path.name}" if path.name in OFFICIAL_FILES.values() else path.name
    fetch = (
        f"Fetch the real file: `git lfs install && git lfs pull` inside your clone of {OFFICIAL_HUB_REPO}, or "
        f"`hf download {OFFICIAL_HUB_REPO} {in_repo} --local-dir <folder>` (`huggingface-cli download` with "
        "huggingface_hub < 1.0)."
    )
    if head.startswith(b"version https://git-lfs"):
        raise ConversionError(
            f"{path} is a git-lfs pointer ({path.stat().st_size} bytes), not the weights: the repository was cloned "
            f"without git-lfs. {fetch}"
        )
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        raise ConversionError(f"{path} is an HTML page (a web page was saved instead of the file). {fetch}")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConversionError(
            f"{path} could not be read as a PyTorch state dict (torch.load with weights_only=True): {error}. "
            f"The download may be truncated. {fetch}"
        ) from error
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise ConversionError(f"{path} holds a {type(state_dict).__name__}, not a flat state dict (name -> tensor) as released.")
    return state_dict


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ configs from tensors
def _key(state_dict: dict, key: str, what: str):
    if key not in state_dict:
        raise ConversionError(f"{what}: key {key!r} is missing, so the architecture cannot be inferred. Is this the right file?")
    return state_dict[key]


def _indices(state_dict: dict, prefix: str) -> list[int]:
    """Sorted distinct integers `i` of keys `prefix{i}.*`."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state_dict if (m := pattern.match(k))})


def infer_pose_net_config(state_dict: dict) -> dict:
    """PoseNet config from `pose_net.pth`: convs are [3x3 stem, (4x4 stride 2, 3x3) per width but the last, 3x3]."""
    what = "pose_net.pth"
    convs = [_key(state_dict, f"conv_layers.{i}.weight", what) for i in _indices(state_dict, "conv_layers.")]
    kernels = [tuple(w.shape[-2:]) for w in convs]
    expected_kernels = [(3, 3)] + [(4, 4), (3, 3)] * (len(convs) // 2 - 1) + [(3, 3)]
    if len(convs) < 4 or len(convs) % 2 or kernels != expected_kernels:
        raise ConversionError(f"{what}: conv kernels {kernels} do not follow PoseNet's layout {expected_kernels}.")
    widths = [w.shape[0] for w in convs[1:-1:2]] + [convs[-1].shape[0]]
    return {
        "conditioning_channels": int(convs[0].shape[1]),
        "block_out_channels": [int(w) for w in widths],
        "out_channels": int(_key(state_dict, "final_proj.weight", what).shape[0]),
    }


def infer_face_encoder_config(state_dict: dict, heads: int | None = None) -> dict:
    """FaceEncoder config from `face_encoder.pth`. `heads` is not in the weights: default to 64-wide heads."""
    what = "face_encoder.pth"
    cross_attention_dim = int(_key(state_dict, "norm.weight", what).shape[0])
    inner_dim = int(_key(state_dict, "fusion_model.layers.0.0.to_q.weight", what).shape[0])
    if heads is None:
        if inner_dim % REFERENCE_DIM_HEAD:
            raise ConversionError(
                f"{what}: the attention width {inner_dim} is not a multiple of the reference head width "
                f"{REFERENCE_DIM_HEAD}; pass the number of heads it was trained with (--face-encoder-heads)."
            )
        heads = inner_dim // REFERENCE_DIM_HEAD
    if heads < 1 or inner_dim % heads:
        raise ConversionError(f"{what}: {heads} heads do not divide the attention width {inner_dim}.")
    return {
        "id_embeddings_dim": int(_key(state_dict, "proj.0.weight", what).shape[1]),
        "clip_embeddings_dim": int(_key(state_dict, "fusion_model.proj_in.weight", what).shape[1]),
        "cross_attention_dim": cross_attention_dim,
        "num_tokens": int(_key(state_dict, "proj.2.weight", what).shape[0]) // cross_attention_dim,
        "depth": len(_indices(state_dict, "fusion_model.layers.")),
        "dim_head": inner_dim // heads,
        "heads": heads,
        "ff_mult": int(_key(state_dict, "fusion_model.layers.0.1.1.weight", what).shape[0]) // cross_attention_dim,
    }


def infer_arcface_config(state_dict: dict) -> dict:
    """ArcFaceIResNet config from `glintr100_torch.pth`: blocks per stage from the largest block index."""
    what = RECOGNIZER_FILE
    stages = []
    while _indices(state_dict, f"layer{len(stages) + 1}."):
        stages.append(len(stages) + 1)
    if not stages:
        raise ConversionError(f"{what}: no `layer1.*` keys; this is not an insightface IResNet state dict.")
    return {
        "layers": [max(_indices(state_dict, f"layer{s}.")) + 1 for s in stages],
        "block_out_channels": [int(_key(state_dict, f"layer{s}.0.conv1.weight", what).shape[0]) for s in stages],
        "num_features": int(_key(state_dict, "fc.weight", what).shape[0]),
        "in_channels": int(_key(state_dict, "conv1.weight", what).shape[1]),
    }


# ------------------------------------------------------------------------------------------------ strict loading
def _listed(keys: list[str]) -> str:
    return shown(keys, _MAX_LISTED_KEYS)


def check_state_dict(model, state_dict: dict, source: str) -> None:
    """Raise unless `state_dict` has exactly `model`'s keys with the same shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing: {_listed(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
        raise ConversionError(
            f"{source} does not match {type(model).__name__} built from its inferred config "
            f"({'; '.join(problems)}). Check that the file is the released one and that --svd is img2vid-xt."
        )
    for key, tensor in expected.items():
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise ConversionError(
                f"{source}: {key} has shape {tuple(state_dict[key].shape)} in the checkpoint but {tuple(tensor.shape)} "
                f"in {type(model).__name__}. Check that the file and the SVD folder belong together."
            )


def load_strict(model_class, config: dict, state_dict: dict, source: str):
    """Build `model_class(**config)` without allocating random weights, then load `state_dict` strictly into it."""
    import torch

    with torch.device("meta"):
        model = model_class.from_config(config)
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True, assign=True)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a non-persistent buffer would stay unallocated; fail loudly rather than save garbage
        raise ConversionError(f"{source}: {type(model).__name__} has tensors not covered by the state dict: {_listed(left)}.")
    return model.eval()


def _fill_num_batches_tracked(model_class, config: dict, state_dict: dict) -> dict:
    """Some IResNet exports drop BatchNorm's `num_batches_tracked` counters (unused at inference): add zeros."""
    import torch

    with torch.device("meta"):
        expected = model_class.from_config(config).state_dict()
    filled = dict(state_dict)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in filled:
            filled[key] = torch.zeros((), dtype=torch.long)
    return filled


# ------------------------------------------------------------------------------------------------ conversion
def convert_official_checkpoint(
    official_dir: str | os.PathLike,
    svd: str | os.PathLike = SVD_REPO,
    output: str | os.PathLike = "stableanimator-diffusers",
    dtype: str = "fp32",
    variant: str | None = None,
    overwrite: bool = False,
    face_encoder_heads: int | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
    svd_revision: str | None = None,
) -> Path:
    """
    Convert the released StableAnimator checkpoints into a `StableAnimatorPipeline` folder (safetensors).

    Args:
        official_dir: Folder with `pose_net.pth`, `face_encoder.pth`, `unet.pth` and optionally
            `glintr100_torch.pth` (directly or in an `Animation/` sub-folder).
        svd: Local Stable Video Diffusion img2vid-xt folder, or a Hub repo id.
        output: The pipeline folder to write. It appears only once complete and verified.
        dtype: `"fp32"`, `"fp16"` or `"bf16"`: dtype of the main weight files.
        variant: Also write `*.<variant>.safetensors` files, `"fp16"` or `"bf16"` (loaded with `variant=`).
        overwrite: Replace an existing `output` (only after the new folder is complete).
        face_encoder_heads: Attention heads of the face encoder (default: 64-wide heads, as released).
        push_to_hub: Repo id to publish the result to (see [`push_to_hub`]).
        private: Create the Hub repo as private.
        svd_revision: Revision of the SVD Hub repo.

    Returns:
        The output folder.
    """
    import torch

    from .memory_presets import cast_pipeline

    if dtype not in DTYPES:
        raise ConversionError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    if variant is not None and variant not in ("fp16", "bf16"):
        raise ConversionError(f"variant must be fp16 or bf16 (its name says the dtype of its files), got {variant!r}.")
    if variant == dtype:
        raise ConversionError(f"--variant {variant} with --dtype {dtype} would write the same weights twice; leave one out.")
    output = Path(output).expanduser().resolve()
    check_output(output, official_dir, svd, overwrite)

    files = find_official_files(official_dir)  # fail on a missing file before any download
    svd_path, svd_source = resolve_svd(svd, svd_revision)
    pipe, references = _build_pipeline(files, svd_path, face_encoder_heads)
    cast_pipeline(pipe, getattr(torch, DTYPES[dtype]))

    provenance = {
        "package": "diffusers-stableanimator",
        "package_version": _package_version(),
        "dtype": dtype,
        "variant": variant,
        "source_files": {
            path.name: {"sha256": sha256_of(path), "bytes": path.stat().st_size} for path in files.values() if path is not None
        },
        "svd": svd_source,
        "face_recognizer": files["face_recognizer"] is not None,
        "configs": {name: _plain(dict(getattr(pipe, name).config)) for name in ("pose_net", "face_encoder") + (("face_recognizer",) if files["face_recognizer"] else ())},
    }

    with StagedOutputs() as staged:  # the folder appears (or replaces the old one) only once complete and verified
        staging = staged.folder(output)
        pipe.save_pretrained(staging, safe_serialization=True)
        if variant:
            # transformers records the dtype in config.json and loads with it: keep the configs of the main files.
            configs = {path: path.read_bytes() for path in staging.rglob("*.json")}
            cast_pipeline(pipe, getattr(torch, DTYPES[variant]))
            pipe.save_pretrained(staging, safe_serialization=True, variant=variant)
            for path, content in configs.items():
                path.write_bytes(content)
        if (svd_path / "LICENSE.md").is_file():  # SVD's licence asks redistributors to include a copy
            shutil.copyfile(svd_path / "LICENSE.md", staging / "LICENSE.md")
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        (staging / "README.md").write_text(render_model_card(provenance, repo_id=push_to_hub))
        del pipe
        verify_converted(staging, references, dtype, variant)
        if output.exists() and not overwrite:
            raise ConversionError(f"--output {output} appeared during the conversion; pass --overwrite to replace it.")
    if push_to_hub:
        _push(output, push_to_hub, private=private)
    return output


def _own_output(relative: Path) -> bool:
    """Files a conversion writes: the top-level cards and configs, and configs/weights inside component folders."""
    if len(relative.parts) == 1:
        return relative.name in ("model_index.json", "README.md", "LICENSE.md", PROVENANCE_FILE)
    return relative.suffix in (".json", ".safetensors", ".txt")


def check_output(output: Path, official_dir, svd, overwrite: bool) -> None:
    """--output never touches an input, and replaces only a folder this command wrote (nothing else in it)."""
    inputs = {"--official-dir": official_dir}
    if Path(svd).expanduser().exists():
        inputs["--svd"] = svd
    check_not_inputs({"--output": output}, inputs)
    check_writable(output, "--output", folder=True)
    if not output.exists():
        return
    if not overwrite:
        raise ConversionError(f"--output {output} already exists; choose another --output or pass --overwrite (it is replaced only after the new folder is verified).")
    foreign = foreign_entries(output, _own_output, own_folders=lambda relative: len(relative.parts) == 1)  # component folders
    if not (output / PROVENANCE_FILE).is_file() or foreign:
        reason = f"it holds files a conversion does not write ({_listed(foreign)})" if foreign else f"it has no {PROVENANCE_FILE}, so this command did not write it"
        raise ConversionError(f"--output {output}: {reason}; --overwrite replaces only a folder written by `stableanimator convert`. Choose another --output.")


def load_official_pipeline(official: str | os.PathLike, svd: str | os.PathLike = SVD_REPO, dtype=None,
                           face_encoder_heads: int | None = None, revision: str | None = None, svd_revision: str | None = None):
    """A `StableAnimatorPipeline` straight from the official release, converted in memory (no folder written).

    Args:
        official: A local folder holding the released `.pth` files (directly or in `Animation/`), or the Hub repo
            id of the release (`FrancisRing/StableAnimator`: only `Animation/*.pth` is fetched).
        svd: A local Stable Video Diffusion img2vid-xt folder, or its Hub repo id.
        dtype: e.g. `torch.float16`; `None` keeps float32.

    `stableanimator convert` writes the same pipeline to a folder (for publishing, or to load faster next time).
    """
    from .memory_presets import cast_pipeline

    files = find_official_files(_official_folder(official, revision))
    svd_path, _ = resolve_svd(svd, svd_revision)
    pipe, _ = _build_pipeline(files, svd_path, face_encoder_heads)
    if dtype is not None:
        cast_pipeline(pipe, dtype)
    return pipe


def _official_folder(official: str | os.PathLike, revision: str | None) -> Path:
    path = Path(official).expanduser()
    if path.is_dir() or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(official)):
        return path  # a folder (or a path that find_official_files reports as missing)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(official), revision=revision, allow_patterns=["Animation/*.pth"]))
    except Exception as error:  # offline, wrong id...
        raise ConversionError(f"{official} is not a local folder, and downloading its Animation/*.pth from the Hub failed: {error}.") from error


def _build_pipeline(files: dict, svd_path: Path, face_encoder_heads: int | None):
    """The pipeline in memory (float32 as stored), plus each component's reference state dict for verification."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from ._library_versions import dtype_argument
    from .models import ArcFaceIResNet, FaceEncoder, PoseNet, StableAnimatorUNetModel
    from .pipeline_stableanimator import StableAnimatorPipeline
    from .schedulers import HJBEulerScheduler

    pose_sd = load_official_state_dict(files["pose_net"])
    pose_net = load_strict(PoseNet, infer_pose_net_config(pose_sd), pose_sd, files["pose_net"].name)

    face_sd = load_official_state_dict(files["face_encoder"])
    face_config = infer_face_encoder_config(face_sd, face_encoder_heads)
    face_encoder = load_strict(FaceEncoder, face_config, face_sd, files["face_encoder"].name)

    # The UNet's architecture is SVD's (its config), plus the ID-Adapter sized by the face encoder's token count.
    unet_config = {k: v for k, v in StableAnimatorUNetModel.load_config(svd_path, subfolder="unet").items() if not k.startswith("_")}
    unet_config["num_face_tokens"] = face_config["num_tokens"]
    unet_sd = load_official_state_dict(files["unet"])
    unet = load_strict(StableAnimatorUNetModel, unet_config, unet_sd, files["unet"].name)

    face_recognizer, recognizer_sd = None, None
    if files["face_recognizer"] is not None:
        recognizer_sd = load_official_state_dict(files["face_recognizer"])
        recognizer_config = infer_arcface_config(recognizer_sd)
        recognizer_sd = _fill_num_batches_tracked(ArcFaceIResNet, recognizer_config, recognizer_sd)
        face_recognizer = load_strict(ArcFaceIResNet, recognizer_config, recognizer_sd, files["face_recognizer"].name)

    vae = AutoencoderKLTemporalDecoder.from_pretrained(svd_path, subfolder="vae")
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(svd_path, subfolder="image_encoder", **dtype_argument(CLIPVisionModelWithProjection, torch.float32))
    pipe = StableAnimatorPipeline(
        vae=vae,
        image_encoder=image_encoder,
        feature_extractor=CLIPImageProcessor.from_pretrained(svd_path, subfolder="feature_extractor"),
        unet=unet,
        pose_net=pose_net,
        face_encoder=face_encoder,
        scheduler=HJBEulerScheduler.from_pretrained(svd_path, subfolder="scheduler"),
        face_recognizer=face_recognizer,
    )
    pipe.check_components()
    references = {
        "unet": unet_sd,
        "pose_net": pose_sd,
        "face_encoder": face_sd,
        # The SVD parts are copied as loaded; verify the copies too. (`pipe.to(dtype)` rebinds parameters to new
        # tensors, so these references keep the loaded values.)
        "vae": vae.state_dict(),
        "image_encoder": image_encoder.state_dict(),
    }
    if recognizer_sd is not None:
        references["face_recognizer"] = recognizer_sd
    return pipe, references


def verify_converted(folder: str | os.PathLike, references: dict[str, dict], dtype: str, variant: str | None = None) -> None:
    """Reload every converted model from `folder` and require its tensors to equal the reference ones cast to `dtype`."""
    import torch

    from ._library_versions import dtype_argument

    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    for name in ("unet", "pose_net", "face_encoder", "scheduler") + (("face_recognizer",) if "face_recognizer" in references else ()):
        if index.get(name, [None])[0] != "diffusers_stableanimator":
            raise ConversionError(f"model_index.json records {name} as {index.get(name)}, not a diffusers_stableanimator class.")
    if list(folder.rglob("*.bin")) or list(folder.rglob("*.pth")):
        raise ConversionError(f"{folder} contains pickle weight files; the converted folder must hold safetensors only.")

    for file_variant, dtype_name in [(None, dtype)] + ([(variant, variant)] if variant else []):
        target = getattr(torch, DTYPES[dtype_name])
        for name, reference in references.items():
            # Load as users do, with an explicit dtype (diffusers models would otherwise upcast to float32).
            component = _component_class(index, name)
            model = component.from_pretrained(folder / name, variant=file_variant, **dtype_argument(component, target))
            loaded = model.state_dict()
            if set(loaded) != set(reference):
                raise ConversionError(f"Verification failed: {name} reloaded with different keys ({_listed(sorted(set(loaded) ^ set(reference)))}).")
            for key, tensor in reference.items():
                expected = tensor.to(target) if tensor.is_floating_point() else tensor
                if loaded[key].dtype != expected.dtype or not torch.equal(loaded[key], expected):
                    raise ConversionError(f"Verification failed: {name}.{key} reloaded from {folder} differs from the source checkpoint.")
            del model, loaded


def _component_class(index: dict, name: str):
    import importlib

    library, class_name = index[name]
    if library == "diffusers_stableanimator":
        return getattr(importlib.import_module("diffusers_stableanimator"), class_name)
    return getattr(importlib.import_module(library), class_name)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffusers-stableanimator")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def _plain(value: Any) -> Any:
    """Config values (tuples, FrozenDicts) -> JSON-friendly values; private keys dropped."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------ model card
def load_model_card_template() -> str:
    """The model card template shipped inside the package (`diffusers_stableanimator/model_cards/`)."""
    return (resources.files("diffusers_stableanimator") / "model_cards" / MODEL_CARD_TEMPLATE).read_text(encoding="utf-8")


def render_model_card(provenance: dict, repo_id: str | None = None) -> str:
    """Fill the model card template with a conversion's provenance (see `PROVENANCE_FILE`)."""
    rows = "\n".join(f"| `{name}` | {info['bytes']:,} | `{info['sha256']}` |" for name, info in provenance["source_files"].items())
    svd = provenance["svd"]
    svd_text = f"`{svd['repo_id']}` at revision `{svd['revision']}`" if svd.get("source") == "hub" else f"a local folder ({svd.get('name', 'unnamed')})"
    variant = provenance.get("variant")
    dtype_text = DTYPES[provenance["dtype"]]
    load_args = f', variant="{variant}", dtype=torch.{DTYPES[variant]}' if variant else f", dtype=torch.{DTYPES[provenance['dtype']]}"
    recognizer = (
        "This repository includes `face_recognizer`, the ArcFace IResNet-100 (`glintr100_torch.pth`) used by face "
        "optimisation. It was trained by the insightface project, whose models are licensed for non-commercial "
        "research only."
        if provenance.get("face_recognizer")
        else "This repository has no `face_recognizer` (the converter was run without `glintr100_torch.pth`), so face "
        "optimisation is unavailable; the face embedding at inference still comes from insightface's antelopev2 "
        "models, whose licence allows non-commercial research only."
    )
    values = {
        "repo_id": repo_id or "path/to/converted-folder",
        "package_version": provenance["package_version"],
        "dtype": dtype_text,
        "variant_text": f"Also `{variant}` variant files (`*.{variant}.safetensors`)." if variant else "No variant files.",
        "load_args": load_args,
        "svd_source": svd_text,
        "source_rows": rows,
        "face_recognizer_note": recognizer,
    }
    return string.Template(load_model_card_template()).substitute(values)


def split_front_matter(card: str) -> tuple[str, str]:
    """`(yaml_text, body)` of a model card that starts with `---` front matter."""
    match = re.match(r"---\n(.*?)\n---\n(.*)", card, flags=re.S)
    if not match:
        raise ValueError("The model card has no YAML front matter between '---' lines at its top.")
    return match.group(1), match.group(2)


# ------------------------------------------------------------------------------------------------ publishing
def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload StableAnimator pipeline (converted from the official checkpoints)",
    write_model_card: bool = True,
):
    """
    Publish a converted folder: create the repo if needed and upload the folder (safetensors, configs, model card).

    With `write_model_card`, `README.md` is (re)written from the template with the repo id and the provenance
    recorded at conversion time. Returns huggingface_hub's `CommitInfo`.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ConversionError(f"{folder} is not a pipeline folder (no model_index.json); run `stableanimator convert` first.")
    pickles = [p.relative_to(folder).as_posix() for ext in ("*.bin", "*.pth", "*.pt", "*.ckpt", "*.pkl") for p in folder.rglob(ext)]
    if pickles:
        raise ConversionError(f"{folder} contains pickle files ({_listed(sorted(pickles))}); publish safetensors only: remove them first.")
    if write_model_card:
        provenance_path = folder / PROVENANCE_FILE
        if not provenance_path.is_file():
            raise ConversionError(f"{folder} has no {PROVENANCE_FILE}, so the model card cannot state the provenance; convert with this package, or pass write_model_card=False.")
        (folder / "README.md").write_text(render_model_card(json.loads(provenance_path.read_text()), repo_id=repo_id))

    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message=commit_message)


_push = push_to_hub  # `convert_official_checkpoint` has a `push_to_hub` argument that shadows the name


# ------------------------------------------------------------------------------------------------ `stableanimator convert`
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--official-dir", required=True, help="folder with pose_net.pth, face_encoder.pth, unet.pth [, glintr100_torch.pth] (or its Animation/ sub-folder)")
    parser.add_argument("--svd", default=SVD_REPO, help=f"Stable Video Diffusion img2vid-xt: local folder or Hub repo id (default {SVD_REPO})")
    parser.add_argument("--svd-revision", default=None, help="revision of the SVD Hub repo")
    parser.add_argument("--output", required=True, help="pipeline folder to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="dtype of the main weight files (default fp32)")
    parser.add_argument("--variant", choices=["fp16", "bf16"], default=None, help="also write *.<variant>.safetensors files in that dtype")
    parser.add_argument("--face-encoder-heads", type=int, default=None, help="attention heads of the face encoder (default: 64-wide heads, as released)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="publish the result to this Hub repo, with a model card")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output (after the new folder is verified)")


def run(args: argparse.Namespace) -> int:
    try:
        output = convert_official_checkpoint(
            official_dir=args.official_dir,
            svd=args.svd,
            output=args.output,
            dtype=args.dtype,
            variant=args.variant,
            overwrite=args.overwrite,
            face_encoder_heads=args.face_encoder_heads,
            push_to_hub=args.push_to_hub,
            private=args.private,
            svd_revision=args.svd_revision,
        )
    except StableAnimatorError as error:  # exits with 1, as convert always has
        print(f"stableanimator convert: error: {error}", file=sys.stderr)
        return 1
    print(f"converted and verified: {output}")
    print(f"load it with StableAnimatorPipeline.from_pretrained({str(output)!r})")
    if args.push_to_hub:
        print(f"published to https://huggingface.co/{args.push_to_hub}")
    return 0
