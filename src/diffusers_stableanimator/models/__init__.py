from .arcface import ArcFaceIResNet
from .attention_processor import IDAdapterAttnProcessor, TemporalContextAttnProcessor
from .face_encoder import FaceEncoder
from .pose_net import PoseNet
from .unet_stableanimator import StableAnimatorUNetModel

__all__ = [
    "ArcFaceIResNet",
    "FaceEncoder",
    "IDAdapterAttnProcessor",
    "PoseNet",
    "StableAnimatorUNetModel",
    "TemporalContextAttnProcessor",
]
