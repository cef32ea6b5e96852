"""StableAnimator (CVPR 2025) identity-preserving human image animation, as a diffusers pipeline."""

from . import _diffusers_registry
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
