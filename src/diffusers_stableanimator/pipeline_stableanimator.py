"""StableAnimatorPipeline: animate one reference photo along a sequence of pose skeletons."""

import functools
import inspect
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import PIL.Image
import torch
from diffusers.models import AutoencoderKLTemporalDecoder
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from diffusers.utils import BaseOutput, logging, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from . import _diffusers_registry
from ._library_versions import dtype_argument
from .lora import StableAnimatorLoraLoaderMixin
from .face_optimization import FaceOptimizationConfig, build_face_objective, check_face_optimization_inputs
from .images import from_array, to_rgb
from .preprocessing.drawing import resize_pose_image
from .models import ArcFaceIResNet, FaceEncoder, PoseNet, StableAnimatorUNetModel
from .parallel import TileParallel, TileParallelMixin, fingerprint, weights_fingerprint
from .schedulers import HJBEulerScheduler
from .tiling import blend_weights, temporal_tiles

logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers_stableanimator import StableAnimatorPipeline
        >>> from diffusers.utils import load_image, export_to_video

        >>> pipe = StableAnimatorPipeline.from_pretrained("path/or/repo", dtype=torch.float16).to("cuda")
        >>> image = load_image("reference.png")
        >>> poses = [load_image(f"poses/frame_{i}.png") for i in range(16)]
        >>> face_embeds = ...  # raw 512-d ArcFace (antelopev2 glintr100) embedding of the reference face
        >>> frames = pipe(image, poses, face_embeds=face_embeds, generator=torch.manual_seed(42)).frames[0]
        >>> export_to_video(frames, "animation.mp4", fps=7)
        ```
"""


@dataclass
class StableAnimatorPipelineOutput(BaseOutput):
    r"""
    Output of [`StableAnimatorPipeline`].

    Args:
        frames (`list[list[PIL.Image.Image]]`, `np.ndarray` or `torch.Tensor`):
            One video per batch item: a list of PIL images, an array `(batch, frames, height, width, 3)`, a tensor
            `(batch, frames, 3, height, width)`, or latents `(batch, frames, 4, height / 8, width / 8)`.
    """

    frames: list[list[PIL.Image.Image]] | np.ndarray | torch.Tensor


def _to_pil_rgb(image: Any, what: str) -> PIL.Image.Image:
    """PIL image, `(H, W, C)` array or `(C, H, W)` tensor -> RGB PIL, by the rules of `images.py` (integers 0-255,
    floats 0-1, out-of-range values refused; alpha composited on white; 16-bit greyscale scaled)."""
    if isinstance(image, PIL.Image.Image):
        return to_rgb(image, what)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return from_array(image, what)
    raise TypeError(f"{what}: expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}.")


def limit_reference_size(image: PIL.Image.Image, height: int, width: int, clip_size: int) -> PIL.Image.Image:
    """Shrink a very large reference by a whole factor (box filter) so that its memory follows the output size, not
    the photo's: each side stays at least four times what the VAE (`width` x `height`) and CLIP (`clip_size`) resize
    it to, so ordinary photos (a 12 MP phone photo at 512x512 too) reach the preprocessing untouched."""
    factor = min(image.size[0] // (4 * max(width, clip_size)), image.size[1] // (4 * max(height, clip_size)))
    return image.reduce(factor) if factor >= 2 else image


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _is_whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def clip_pixel_values(images: torch.Tensor, feature_extractor: CLIPImageProcessor) -> torch.Tensor:
    """Images `(B, 3, H, W)` in [-1, 1] -> CLIP encoder input, as SVD prepares it: an antialiased resize to the
    feature extractor's crop size (done in [-1, 1], like SVD's own pipeline), then CLIP's mean/std normalisation."""
    crop = feature_extractor.crop_size
    pixels = (_resize_with_antialiasing(images.float(), (crop["height"], crop["width"])) + 1.0) / 2.0
    mean = torch.tensor(feature_extractor.image_mean, device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(feature_extractor.image_std, device=pixels.device).view(1, -1, 1, 1)
    return (pixels - mean) / std


def _pose_list(poses: Any) -> list:
    """Split a batch of pose frames (array `(F, H, W, C)`, tensor `(F, C, H, W)`) or a list into frames."""
    if isinstance(poses, (np.ndarray, torch.Tensor)):
        if poses.ndim != 4:
            raise ValueError(
                f"`poses` as an array or tensor must be 4-D: (frames, H, W, 3) or (frames, 3, H, W), got shape {tuple(poses.shape)}."
            )
        return list(poses)
    if isinstance(poses, PIL.Image.Image):
        return [poses]
    return list(poses)


class StableAnimatorPipeline(DiffusionPipeline, StableAnimatorLoraLoaderMixin, TileParallelMixin):
    r"""
    Identity-preserving human image animation (StableAnimator, CVPR 2025) on Stable Video Diffusion.

    Args:
        vae ([`AutoencoderKLTemporalDecoder`]): SVD's VAE with a temporal decoder.
        image_encoder ([`~transformers.CLIPVisionModelWithProjection`]): CLIP image encoder (`image_embeds`).
        feature_extractor ([`~transformers.CLIPImageProcessor`]): Normalisation for the CLIP encoder.
        unet ([`StableAnimatorUNetModel`]): The denoiser, with pose injection and the ID-Adapter.
        pose_net ([`PoseNet`]): Pose skeleton encoder.
        face_encoder ([`FaceEncoder`]): ArcFace embedding + CLIP embedding -> face tokens.
        scheduler ([`HJBEulerScheduler`]): SVD's EDM Euler scheduler (with the face-optimisation seam).
        face_recognizer ([`ArcFaceIResNet`], *optional*): Differentiable ArcFace used by face optimisation.
    """

    model_cpu_offload_seq = "image_encoder->face_encoder->pose_net->unet->vae"
    _optional_components = ["face_recognizer"]
    _exclude_from_cpu_offload = ["face_recognizer"]
    _callback_tensor_inputs = ["latents"]

    # The annotations below are real classes (no `from __future__ import annotations` in this module) and the
    # optional one is `typing.Optional`: older diffusers (0.33, the oldest setup.cfg allows) reads them to check
    # loaded components and accepts only classes and `typing.Union` (.ci/oldest-versions).
    def __init__(
        self,
        vae: AutoencoderKLTemporalDecoder,
        image_encoder: CLIPVisionModelWithProjection,
        feature_extractor: CLIPImageProcessor,
        unet: StableAnimatorUNetModel,
        pose_net: PoseNet,
        face_encoder: FaceEncoder,
        scheduler: HJBEulerScheduler,
        face_recognizer: Optional[ArcFaceIResNet] = None,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            unet=unet,
            pose_net=pose_net,
            face_encoder=face_encoder,
            scheduler=scheduler,
            face_recognizer=face_recognizer,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8
        self.video_processor = VideoProcessor(do_resize=True, vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "StableAnimatorPipeline":
        """diffusers' `DiffusionPipeline.from_pretrained`. `dtype=` works with every diffusers version `setup.cfg`
        allows: before 0.40 diffusers calls it `torch_dtype` and would ignore `dtype` (loading float32)."""
        if "dtype" in kwargs:
            kwargs.update(dtype_argument(DiffusionPipeline, kwargs.pop("dtype")))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_official(cls, official, svd="stabilityai/stable-video-diffusion-img2vid-xt", dtype=None, **kwargs) -> "StableAnimatorPipeline":
        """The pipeline straight from the official release (a folder or Hub repo id with `Animation/*.pth`) and an
        SVD-xt folder or repo id, converted in memory without writing a folder. See
        [`~conversion.load_official_pipeline`] for the arguments."""
        from .conversion import load_official_pipeline

        return load_official_pipeline(official, svd, dtype=dtype, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' `save_pretrained`, recording the CLIP processor by its portable name: transformers 5 without
        torchvision loads `CLIPImageProcessor` as `CLIPImageProcessorPil` and would record that, which transformers
        4.x cannot load. Every version loads `CLIPImageProcessor`."""
        super().save_pretrained(save_directory, *args, **kwargs)
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path) as f:
            index = json.load(f)
        if index.get("feature_extractor") == ["transformers", "CLIPImageProcessorPil"]:
            index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
            with open(index_path, "w") as f:
                json.dump(index, f, indent=2, sort_keys=True)
                f.write("\n")

    # ------------------------------------------------------------------------------------------------ checks
    def check_components(self) -> None:
        """The components must agree on their dimensions (a mix of checkpoints is the usual cause)."""
        unet, pose_net, face_encoder = self.unet.config, self.pose_net, self.face_encoder.config
        problems = []
        latent = self.vae.config.latent_channels
        if (unet.in_channels, unet.out_channels) != (2 * latent, latent):  # noisy + reference latents in, noise out
            problems.append(f"unet in/out_channels={unet.in_channels}/{unet.out_channels} but the VAE's latents have {latent} channels (expected {2 * latent}/{latent})")
        if pose_net.config.out_channels != unet.block_out_channels[0]:
            problems.append(f"pose_net.out_channels={pose_net.config.out_channels} but unet.block_out_channels[0]={unet.block_out_channels[0]}")
        if pose_net.downsample_factor != self.vae_scale_factor:
            problems.append(f"pose_net downsamples x{pose_net.downsample_factor} but the VAE x{self.vae_scale_factor}")
        if face_encoder.cross_attention_dim != unet.cross_attention_dim:
            problems.append(f"face_encoder.cross_attention_dim={face_encoder.cross_attention_dim} but unet.cross_attention_dim={unet.cross_attention_dim}")
        if face_encoder.num_tokens != unet.num_face_tokens:
            problems.append(f"face_encoder.num_tokens={face_encoder.num_tokens} but unet.num_face_tokens={unet.num_face_tokens}")
        if problems:
            raise ValueError("The pipeline's components do not fit together: " + "; ".join(problems) + ".")

    @staticmethod
    def _face_embeds_tensor(face_embeds: Any) -> torch.Tensor:
        if not isinstance(face_embeds, torch.Tensor):
            array = np.asarray(face_embeds)
            if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
                raise ValueError(f"`face_embeds` must be an array of numbers (the 512-d ArcFace embedding), got {type(face_embeds).__name__} of dtype {array.dtype}.")
            face_embeds = torch.from_numpy(array)
        elif not (face_embeds.is_floating_point() or face_embeds.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"`face_embeds` must be a tensor of numbers, got dtype {face_embeds.dtype}.")
        return face_embeds.float()

    def check_face_embeds(self, face_embeds: torch.Tensor) -> None:
        expected_dim = self.face_encoder.config.id_embeddings_dim
        if face_embeds.shape not in ((expected_dim,), (1, expected_dim)):
            raise ValueError(f"`face_embeds` must have shape ({expected_dim},) or (1, {expected_dim}), got {tuple(face_embeds.shape)}.")
        if not torch.isfinite(face_embeds).all():
            raise ValueError("`face_embeds` contains NaN or infinite values; recompute the face embedding.")

    def check_inputs(self, poses, face_embeds, face_analyzer, height, width, tile_size, tile_overlap, decode_chunk_size, num_inference_steps, latents, min_guidance_scale, max_guidance_scale, fps=7, motion_bucket_id=127, noise_aug_strength=0.02, output_type="pil"):
        self.check_components()
        if len(poses) == 0:
            raise ValueError("`poses` is empty: give at least one pose frame (one per output frame).")
        for name, value in (("height", height), ("width", width), ("num_inference_steps", num_inference_steps), ("tile_size", tile_size), ("tile_overlap", tile_overlap)):
            if not _is_whole(value) or value < (0 if name == "tile_overlap" else 1):
                raise ValueError(f"`{name}` must be a positive whole number, got {value!r}.")
        if decode_chunk_size is not None and not _is_whole(decode_chunk_size):
            raise ValueError(f"`decode_chunk_size` must be a whole number or None, got {decode_chunk_size!r}.")
        for name, value, low in (("min_guidance_scale", min_guidance_scale, 0), ("max_guidance_scale", max_guidance_scale, 0),
                                 ("noise_aug_strength", noise_aug_strength, 0), ("motion_bucket_id", motion_bucket_id, 0), ("fps", fps, 1)):
            if not _is_number(value) or value < low:
                raise ValueError(f"`{name}` must be a finite number of at least {low}, got {value!r}.")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}.")
        multiple = 64
        if height % multiple or width % multiple:
            raise ValueError(
                f"height and width must be multiples of {multiple} (the VAE and UNet need it), got {height}x{width}. "
                "Pass `height=` and `width=` (the released weights are trained at 512x512 and 576x1024 (W x H))."
            )
        if face_embeds is not None:
            self.check_face_embeds(face_embeds)
        elif face_analyzer is None:
            raise ValueError(
                "Give `face_embeds` (the raw ArcFace (insightface antelopev2 glintr100) embedding of the reference "
                f"face, shape ({self.face_encoder.config.id_embeddings_dim},)) or `face_analyzer=` (a FaceAnalyzer or "
                "an antelopev2 model folder) to compute it."
            )
        if tile_size < 2 or not 1 <= tile_overlap < tile_size:
            # Each tile's first slot is frame 0, so consecutive tiles must share a frame or one would be skipped.
            raise ValueError(
                f"Need tile_size >= 2 and 1 <= tile_overlap < tile_size, got tile_size={tile_size}, tile_overlap={tile_overlap} "
                "(the reference uses 16 and 4)."
            )
        if decode_chunk_size is not None and decode_chunk_size < 1:
            raise ValueError(f"`decode_chunk_size` must be at least 1 (or None to decode all frames at once), got {decode_chunk_size}.")
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {num_inference_steps}.")
        if min_guidance_scale > max_guidance_scale:
            raise ValueError(f"`min_guidance_scale` ({min_guidance_scale}) must not exceed `max_guidance_scale` ({max_guidance_scale}).")
        if latents is not None:
            expected = (1, len(poses), self.vae.config.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
            if tuple(latents.shape) != expected:
                raise ValueError(f"`latents` must have shape {expected} (1, frames, channels, height/{self.vae_scale_factor}, width/{self.vae_scale_factor}), got {tuple(latents.shape)}.")

    # ------------------------------------------------------------------------------------------------ inputs
    def prepare_pose_images(self, poses: list[PIL.Image.Image], height: int, width: int, device, dtype) -> torch.Tensor:
        """RGB pose frames -> `(frames, 3, height, width)` in [-1, 1]. Frames of another size are resized as the
        official code loads pose images (PIL bicubic): draw them at the source size, not at the output size."""
        if any(pose.size != (width, height) for pose in poses):
            logger.info(f"Resizing pose frames to the output size {width}x{height} (bicubic, as the model was trained).")
            poses = [resize_pose_image(pose, width, height) for pose in poses]
        pixels = torch.from_numpy(np.stack([np.asarray(pose) for pose in poses])).permute(0, 3, 1, 2)
        return (pixels.to(device=device, dtype=torch.float32) / 127.5 - 1.0).to(dtype)

    def encode_image(self, image: PIL.Image.Image, device) -> torch.Tensor:
        """Reference image -> CLIP `image_embeds`, `(1, 1, dim)`, preprocessed as in SVD."""
        dtype = next(self.image_encoder.parameters()).dtype
        pixels = self.video_processor.numpy_to_pt(self.video_processor.pil_to_numpy(image)) * 2.0 - 1.0
        pixels = clip_pixel_values(pixels, self.feature_extractor)
        return self.image_encoder(pixels.to(device=device, dtype=dtype)).image_embeds.unsqueeze(1)

    @staticmethod
    def embed_face(image: PIL.Image.Image, face_analyzer: Any, width: int, height: int, allow_no_face: bool = False) -> np.ndarray:
        """The raw ArcFace embedding of the reference's largest face, by the training recipe
        (`FaceAnalyzer.reference_embedding`)."""
        if isinstance(face_analyzer, (str, os.PathLike)):
            from .preprocessing.face_analysis import FaceAnalyzer

            face_analyzer = FaceAnalyzer(face_analyzer)
        return face_analyzer.reference_embedding(image, width, height, allow_no_face=allow_no_face)

    def encode_face(self, face_embeds: torch.Tensor, clip_embeds: torch.Tensor) -> torch.Tensor:
        """Raw ArcFace embedding + CLIP embedding -> face tokens `(1, num_tokens, dim)`."""
        face_embeds = face_embeds.reshape(1, -1).to(device=clip_embeds.device, dtype=self.face_encoder.dtype)
        return self.face_encoder(face_embeds, clip_embeds.to(self.face_encoder.dtype)).to(clip_embeds.dtype)

    def encode_reference_latents(self, image, height, width, noise_aug_strength, generator, device, dtype) -> torch.Tensor:
        """Reference image -> noise-augmented VAE latents (the mode, unscaled, as in SVD) `(1, 1, C, h, w)`."""
        pixels = self.video_processor.preprocess(image, height=height, width=width).to(device)
        noise = randn_tensor(pixels.shape, generator=generator, device=device, dtype=pixels.dtype)
        pixels = pixels + noise_aug_strength * noise
        needs_upcasting = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        vae_dtype = torch.float32 if needs_upcasting else self.vae.dtype
        if needs_upcasting:  # plain casts: ModelMixin.to prints an empty "keep in float32" note on every call
            torch.nn.Module.to(self.vae, dtype=torch.float32)
        latents = self.vae.encode(pixels.to(vae_dtype)).latent_dist.mode()
        if needs_upcasting:
            torch.nn.Module.to(self.vae, dtype=torch.float16)
        return latents.unsqueeze(1).to(dtype)

    def get_add_time_ids(self, fps, motion_bucket_id, noise_aug_strength, dtype, device) -> torch.Tensor:
        # SVD was conditioned on fps - 1.
        add_time_ids = [fps - 1, motion_bucket_id, noise_aug_strength]
        expected = self.unet.add_embedding.linear_1.in_features
        if self.unet.config.addition_time_embed_dim * len(add_time_ids) != expected:
            raise ValueError(f"The UNet expects an added-time embedding of width {expected}; check `unet.config.addition_time_embed_dim`.")
        return torch.tensor([add_time_ids], dtype=dtype, device=device)

    def prepare_latents(self, num_frames, height, width, dtype, device, generator, latents=None) -> torch.Tensor:
        shape = (1, num_frames, self.vae.config.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device=device, dtype=dtype)
        return latents * self.scheduler.init_noise_sigma

    # ------------------------------------------------------------------------------------------------ denoising
    def predict_noise(self, latents, t, conditioning, guidance_scale, tiles, parallel: TileParallel | None = None) -> torch.Tensor:
        """
        The guided model output for the whole video: one UNet forward per tile, conditional and unconditional
        branches batched together, tiles blended with triangular weights. With `parallel`, this process runs its
        share of the tiles and receives the others' outputs.
        """
        model_input = self.scheduler.scale_model_input(latents, t)
        batch = conditioning["encoder_hidden_states"].shape[0]  # 2 with guidance (uncond, cond), else 1
        outputs = []
        for tile in tiles if parallel is None else parallel.share(tiles):
            tile_input = torch.cat([model_input[:, tile].expand(batch, -1, -1, -1, -1), conditioning["reference_latents"].expand(-1, len(tile), -1, -1, -1)], dim=2)
            pose = conditioning["pose_latents"][tile]
            if batch == 2:  # the unconditional branch has no pose (reference: pose_latents=None there)
                pose = torch.cat([torch.zeros_like(pose), pose])
            output = self.unet(
                tile_input,
                t,
                encoder_hidden_states=conditioning["encoder_hidden_states"],
                added_time_ids=conditioning["added_time_ids"],
                pose_latents=pose,
                return_dict=False,
            )[0].float()
            if batch == 2:
                uncond, cond = output.chunk(2)
                output = uncond + guidance_scale[:, tile] * (cond - uncond)
            outputs.append(output)
        if parallel is not None:
            # Every tile's output on every process, blended in one process's order: the same sums to the last bit
            # (an all-reduce of partial sums differs in rounding, and face optimisation's Adam steps amplify that).
            outputs = parallel.all_gather_shares(outputs, [(1, len(tile), *latents.shape[2:]) for tile in tiles], latents.device)
        prediction = torch.zeros_like(latents, dtype=torch.float32)
        total_weight = torch.zeros(latents.shape[1], device=latents.device, dtype=torch.float32)
        for tile, output in zip(tiles, outputs):
            weights = blend_weights(len(tile), device=latents.device)
            prediction[:, tile] += output * weights[None, :, None, None, None]
            total_weight[tile] += weights
        return (prediction / total_weight[None, :, None, None, None]).to(latents.dtype)

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int | None = None, parallel: TileParallel | None = None) -> torch.Tensor:
        """Latents `(1, F, C, h, w)` -> frames `(1, 3, F, H, W)` in [-1, 1] (float32), decoded in chunks of frames.
        With `parallel`, each process decodes its share of the chunks and the frames are summed into place."""
        num_frames = latents.shape[1]
        decode_chunk_size = decode_chunk_size or num_frames
        latents = latents.flatten(0, 1) / self.vae.config.scaling_factor
        accepts_num_frames = "num_frames" in inspect.signature(self.vae.forward).parameters
        starts = range(0, num_frames, decode_chunk_size)
        mine = starts if parallel is None else parallel.share(starts)
        frames = []
        for start in mine:
            chunk = latents[start : start + decode_chunk_size].to(self.vae.dtype)
            kwargs = {"num_frames": chunk.shape[0]} if accepts_num_frames else {}
            frames.append(self.vae.decode(chunk, **kwargs).sample.float())
        if parallel is None:
            frames = torch.cat(frames)
        else:  # zeros where the other processes decoded: the sum puts every frame in place exactly (x + 0 = x)
            height, width = (n * self.vae_scale_factor for n in latents.shape[-2:])
            decoded, frames = frames, torch.zeros(num_frames, self.vae.config.out_channels, height, width, device=latents.device)
            if decoded:
                frames[mine[0] : mine[0] + sum(len(f) for f in decoded)] = torch.cat(decoded)
            parallel.all_reduce_sum(frames)
        return frames.reshape(1, num_frames, *frames.shape[1:]).permute(0, 2, 1, 3, 4)

    @property
    def guidance_scale(self):
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._do_classifier_free_guidance

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    # ------------------------------------------------------------------------------------------------ call
    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        image: PIL.Image.Image | np.ndarray | torch.Tensor,
        poses: list[PIL.Image.Image] | np.ndarray | torch.Tensor,
        face_embeds: np.ndarray | torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        min_guidance_scale: float = 3.0,
        max_guidance_scale: float = 3.0,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        tile_size: int = 16,
        tile_overlap: int = 4,
        decode_chunk_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        return_dict: bool = True,
        face_optimization: FaceOptimizationConfig | dict | None = None,
        face_boxes: list[tuple[int, int, int, int] | None] | None = None,
        reference_face_box: tuple[int, int, int, int] | None = None,
        face_analyzer: Any = None,
        allow_no_face: bool = False,
    ) -> StableAnimatorPipelineOutput | tuple:
        r"""
        Animate `image` along `poses`: one output frame per pose frame.

        Args:
            image: The reference photo (PIL image, `(H, W, 3)` array, or `(3, H, W)` tensor in [0, 1]). RGBA is
                composited on white, greyscale converted to RGB.
            poses: Pose skeleton frames, drawn like the training data (DWPose/OpenPose style on black): a list
                of images, an array `(F, H, W, 3)` or a tensor `(F, 3, H, W)` in [0, 1]. Frames whose size differs
                from `width` x `height` are resized (with a warning); align them to the reference body first.
            face_embeds: The raw (not L2-normalised) 512-d ArcFace embedding of the reference face, shape `(512,)`
                or `(1, 512)`, from insightface's antelopev2 `glintr100`.
            height, width: Output size, multiples of 64. Default: the size of the first pose frame. The released
                weights are trained at 512x512 and 576x1024 (W x H).
            num_inference_steps: Euler steps (25 in the reference).
            min_guidance_scale, max_guidance_scale: Classifier-free guidance, ramped linearly over the frames.
                With `max_guidance_scale <= 1` no unconditional branch runs at all.
            fps, motion_bucket_id, noise_aug_strength: SVD's micro-conditioning (the UNet sees `fps - 1`).
            tile_size, tile_overlap: Temporal tiling of long videos (reference layout and blending).
            decode_chunk_size: Frames decoded at once by the temporal VAE decoder (`None`: all frames, as the
                reference's default; smaller saves memory and changes the result slightly).
            generator: Random generator(s) for reproducibility.
            latents: Initial noise `(1, F, 4, H/8, W/8)` (SVD semantics: scaled by `scheduler.init_noise_sigma`).
            output_type: `"pil"`, `"np"`, `"pt"` or `"latent"`.
            callback_on_step_end: Called as `callback(pipe, step, timestep, tensors)` after each step; may return
                replacement `latents`.
            callback_on_step_end_tensor_inputs: Names of the tensors passed to the callback.
            return_dict: Return a [`StableAnimatorPipelineOutput`] instead of a tuple.
            face_optimization: Turn on StableAnimator's face optimisation ("HJB"): a `FaceOptimizationConfig` or a
                dict of its fields (`{}` = defaults: `mode="face_crop"`, the reference's steps 0-20, lr 0.1, 3 Adam
                iterations, chunks of 4 face frames); `None` = off. Needs the `face_recognizer` component. See
                docs/face_optimization.md.
            face_boxes: One face box `(x1, y1, x2, y2)` per output frame in output pixels (x2/y2 exclusive, like
                PIL's crop), or None for a frame without a face. Boxes are clipped to the frame.
            reference_face_box: The face box in the reference image, in its own pixels.
            face_analyzer: Computes `face_embeds` when they are not given: a
                [`~preprocessing.FaceAnalyzer`] or the path of an antelopev2 model folder (extra `[face]`). The
                reference is analysed at the output size, as the released weights were trained.
            allow_no_face: With `face_analyzer`, a reference without a detectable face gets a zero embedding
                (no identity guidance) instead of an error.

        Examples:
        """
        # 0. Normalise the inputs (RGBA / greyscale / arrays -> RGB PIL)
        image = _to_pil_rgb(image, "image")
        poses = [_to_pil_rgb(pose, f"poses[{i}]") for i, pose in enumerate(_pose_list(poses))]
        width = width if width is not None else (poses[0].size[0] if poses else 64)
        height = height if height is not None else (poses[0].size[1] if poses else 64)
        if face_embeds is not None:
            face_embeds = self._face_embeds_tensor(face_embeds)

        # 1. Check inputs before any heavy work
        for name in callback_on_step_end_tensor_inputs:
            if name not in self._callback_tensor_inputs:
                raise ValueError(f"`callback_on_step_end_tensor_inputs` may contain {self._callback_tensor_inputs}, got {name!r}.")
        self.check_inputs(poses, face_embeds, face_analyzer, height, width, tile_size, tile_overlap, decode_chunk_size, num_inference_steps, latents, min_guidance_scale, max_guidance_scale, fps, motion_bucket_id, noise_aug_strength, output_type)
        full_image = image  # reference_face_box is in its pixels; face optimisation crops the face from it
        image = limit_reference_size(image, height, width, self.feature_extractor.crop_size["height"])
        face_inputs = check_face_optimization_inputs(
            face_optimization, face_boxes, reference_face_box, num_frames=len(poses), height=height, width=width,
            reference_size=full_image.size, face_recognizer=self.face_recognizer,
        )
        if face_embeds is None:  # the inputs are valid: now the (ONNX) face analysis is worth running
            face_embeds = torch.from_numpy(self.embed_face(image, face_analyzer, width, height, allow_no_face)).float()
            self.check_face_embeds(face_embeds)
        num_frames = len(poses)
        device = self._execution_device
        self._do_classifier_free_guidance = max_guidance_scale > 1.0

        # 2. Encode the reference: CLIP token + face tokens; the unconditional context is all zeros
        clip_embeds = self.encode_image(image, device)
        dtype = clip_embeds.dtype
        encoder_hidden_states = torch.cat([clip_embeds, self.encode_face(face_embeds, clip_embeds)], dim=1)

        # 3. Reference latents (unconditional: zeros) and micro-conditioning
        reference_latents = self.encode_reference_latents(image, height, width, noise_aug_strength, generator, device, dtype)
        added_time_ids = self.get_add_time_ids(fps, motion_bucket_id, noise_aug_strength, dtype, device)
        if self.do_classifier_free_guidance:
            encoder_hidden_states = torch.cat([torch.zeros_like(encoder_hidden_states), encoder_hidden_states])
            reference_latents = torch.cat([torch.zeros_like(reference_latents), reference_latents])
            added_time_ids = torch.cat([added_time_ids, added_time_ids])

        # 4. Pose features: once per call (they do not depend on the timestep)
        pose_images = self.prepare_pose_images(poses, height, width, device, self.pose_net.dtype)
        pose_latents = self.pose_net(pose_images).to(dtype)
        conditioning = {
            "encoder_hidden_states": encoder_hidden_states,
            "reference_latents": reference_latents,
            "added_time_ids": added_time_ids,
            "pose_latents": pose_latents,
        }

        # 5. Timesteps, initial noise, per-frame guidance and tiles
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        latents = self.prepare_latents(num_frames, height, width, dtype, device, generator, latents)
        guidance_scale = torch.linspace(min_guidance_scale, max_guidance_scale, num_frames, device=device)
        self._guidance_scale = guidance_scale[None, :, None, None, None]
        tiles = temporal_tiles(num_frames, tile_size, tile_overlap)
        parallel = self._tile_parallel  # None with one process (see enable_tile_parallel): then nothing below is shared
        if parallel is not None:  # before the first sum: processes that disagree must stop, not blend different videos
            parallel.check_agreement({
                "the inputs": fingerprint(full_image, poses, face_embeds, height, width, num_inference_steps, min_guidance_scale, max_guidance_scale, fps,
                                          motion_bucket_id, noise_aug_strength, tile_size, tile_overlap, decode_chunk_size, output_type, face_inputs),
                "the seed (initial noise)": fingerprint(latents),
                "the model (weights, scheduler)": fingerprint(weights_fingerprint([self.unet, self.vae, self.image_encoder, self.pose_net, self.face_encoder, self.face_recognizer]), timesteps, self.scheduler.sigmas),
            })
            logger.info(f"denoising {len(tiles)} tiles on {parallel.world_size} processes")
        face_objective = None
        if face_inputs is not None:  # x̂0 -> face loss; the scheduler refines x̂0 with it inside its window
            face_objective = build_face_objective(self.vae, self.face_recognizer, full_image, face_inputs)
            face_objective.parallel = parallel

        # 6. Denoising loop
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                noise_pred = self.predict_noise(latents, t, conditioning, self._guidance_scale, tiles, parallel)
                if face_objective is not None and face_objective.config.refines(i):
                    progress_bar.set_postfix_str("face optimisation", refresh=True)  # these steps take much longer
                    refine = functools.partial(face_objective.refine, step_index=i, num_inference_steps=len(timesteps))
                    latents = self.scheduler.step(noise_pred, t, latents, return_dict=False, refine_x0=refine)[0]
                else:
                    progress_bar.set_postfix_str("", refresh=False)
                    latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]

                if callback_on_step_end is not None:
                    available = {"latents": latents}
                    tensors = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, tensors)
                    latents = callback_outputs.pop("latents", latents)
                progress_bar.update()

        # 7. Decode
        if output_type == "latent":
            frames = latents
        else:
            frames = self.decode_latents(latents, decode_chunk_size, parallel)
            frames = self.video_processor.postprocess_video(video=frames, output_type=output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return StableAnimatorPipelineOutput(frames=frames)


# diffusers' loader must know this package's classes before any `from_pretrained` of a pipeline.
_diffusers_registry.register(["ArcFaceIResNet", "FaceEncoder", "HJBEulerScheduler", "PoseNet", "StableAnimatorUNetModel"])
_diffusers_registry.expose_pipeline(StableAnimatorPipeline)
_diffusers_registry.register_lora_model(StableAnimatorUNetModel)
