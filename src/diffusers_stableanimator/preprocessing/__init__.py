"""From a reference photo and a driving video to the pipeline's inputs: the face embedding, pose
skeleton images (aligned to the reference body) and per-frame face boxes.

Optional dependencies are imported only when used: insightface + onnxruntime for faces (`[face]`),
onnxruntime + OpenCV for poses (`[pose]`), imageio + imageio-ffmpeg for videos (`[video]`).
"""

from ._common import ModelFilesNotFoundError, onnx_providers
from .alignment import AlignmentError, AlignmentTransform, REFERENCE_KEYPOINT_IDS, align_poses, fit_alignment
from .drawing import draw_pose, draw_poses, render_pose, render_pose_small, resize_pose_image
from .dwpose import DWPoseDetector, coco_wholebody_to_openpose, multiclass_nms, simcc_decode, yolox_decode
from .face_analysis import FaceAnalyzer, FaceInfo, NoFaceDetectedError
from .face_boxes import (
    DEFAULT_FACE_BOX_MARGIN,
    FaceBoxMargin,
    box_to_mask,
    face_box_from_mask,
    face_box_from_pose,
    face_boxes_from_masks,
    face_boxes_from_poses,
    read_face_boxes,
)
from .keypoints import PoseFrame, load_poses, save_poses
from .video_io import iter_frames, list_frame_files, read_frames, video_fps, write_frames, write_video

__all__ = [
    "AlignmentError", "AlignmentTransform", "DEFAULT_FACE_BOX_MARGIN", "DWPoseDetector", "FaceAnalyzer",
    "FaceBoxMargin", "FaceInfo", "ModelFilesNotFoundError", "NoFaceDetectedError", "PoseFrame",
    "REFERENCE_KEYPOINT_IDS", "align_poses", "box_to_mask", "coco_wholebody_to_openpose", "draw_pose",
    "draw_poses", "render_pose", "render_pose_small", "resize_pose_image", "face_box_from_mask", "face_box_from_pose", "face_boxes_from_masks",
    "face_boxes_from_poses", "fit_alignment", "iter_frames", "list_frame_files", "load_poses",
    "multiclass_nms", "onnx_providers", "read_face_boxes", "read_frames", "save_poses", "simcc_decode", "video_fps",
    "write_frames", "write_video", "yolox_decode",
]
