"""StableAnimator (CVPR 2025) identity-preserving human image animation, as a diffusers pipeline.

The public names are imported on first use (see `_lazy.py`). Importing the pipeline registers this package's
classes with diffusers' loader, so that `DiffusionPipeline.from_pretrained` also returns a `StableAnimatorPipeline`.
"""

from ._lazy import lazy_exports
from ._quiet import quiet_library_noise

quiet_library_noise()

__version__ = "0.1.0"

_EXPORTS = {
    "Animation": ".animator",
    "Animator": ".animator",
    "ArcFaceIResNet": ".models",
    "FaceEncoder": ".models",
    "DrivingPoses": ".animator",
    "FaceOptimizationConfig": ".face_optimization",
    "HJBEulerScheduler": ".schedulers",
    "IDAdapterAttnProcessor": ".models",
    "PoseNet": ".models",
    "Reference": ".animator",
    "StableAnimatorPipeline": ".pipeline_stableanimator",
    "StableAnimatorPipelineOutput": ".pipeline_stableanimator",
    "StableAnimatorUNetModel": ".models",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
