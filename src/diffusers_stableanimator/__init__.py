"""StableAnimator (CVPR 2025) identity-preserving human image animation, as a diffusers pipeline."""

from ._quiet import quiet_library_noise

quiet_library_noise()

from . import _diffusers_registry  # noqa: E402
from .face_optimization import FaceOptimizationConfig
from .models import ArcFaceIResNet, FaceEncoder, IDAdapterAttnProcessor, PoseNet, StableAnimatorUNetModel
from .pipeline_stableanimator import StableAnimatorPipeline, StableAnimatorPipelineOutput
from .schedulers import HJBEulerScheduler

__version__ = "0.1.0"

__all__ = [
    "ArcFaceIResNet",
    "FaceEncoder",
    "FaceOptimizationConfig",
    "HJBEulerScheduler",
    "IDAdapterAttnProcessor",
    "PoseNet",
    "StableAnimatorPipeline",
    "StableAnimatorPipelineOutput",
    "StableAnimatorUNetModel",
]

_diffusers_registry.register(["ArcFaceIResNet", "FaceEncoder", "HJBEulerScheduler", "PoseNet", "StableAnimatorUNetModel"])
_diffusers_registry.expose_pipeline(StableAnimatorPipeline)
