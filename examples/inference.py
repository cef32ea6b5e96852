"""Plain-Python inference: reference photo + a folder of aligned pose frames -> mp4.

    python examples/inference.py --model path/or/repo --image ref.png --poses poses/ --face-models ~/models/antelopev2

Poses come from `stableanimator extract-poses --video driving.mp4 --reference ref.png --out poses/`, which
also writes the face boxes used here for face optimisation. The `stableanimator animate` command does all of
this (and the pose extraction) in one go; this script shows the Python API step by step.
"""

import argparse
from pathlib import Path

import torch
from diffusers.utils import export_to_video, load_image

from diffusers_stableanimator import StableAnimatorPipeline
from diffusers_stableanimator.preprocessing import FaceAnalyzer, read_face_boxes
from diffusers_stableanimator.preprocessing.video_io import list_frame_files

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--image", required=True)
parser.add_argument("--poses", required=True)
parser.add_argument("--face-models", required=True, help="antelopev2 folder (scrfd_10g_bnkps.onnx, glintr100.onnx)")
parser.add_argument("--out", default="animation.mp4")
args = parser.parse_args()

device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.float16 if device == "cuda" else torch.float32
pipe = StableAnimatorPipeline.from_pretrained(args.model, dtype=dtype)
pipe.enable_model_cpu_offload(device=device)  # the "balanced" memory preset; use pipe.to(device) with more memory

image = load_image(args.image)
poses = [load_image(str(path)) for path in list_frame_files(args.poses)]
width, height = poses[0].size

# The embedding the released weights were trained with (reference resized to the generation size, BGR).
analyzer = FaceAnalyzer(args.face_models, device=device)
face_embeds = analyzer.reference_embedding(image, width, height)

face_optimization = {}
boxes_file = Path(args.poses) / "face_boxes.json"  # written by `stableanimator extract-poses`
if pipe.face_recognizer is not None and boxes_file.is_file():
    face_optimization = dict(
        face_optimization={"mode": "face_crop"},
        face_boxes=read_face_boxes(boxes_file, width, height),
        reference_face_box=tuple(float(v) for v in analyzer.analyze(image).bbox),
    )

frames = pipe(
    image, poses, face_embeds=face_embeds, height=height, width=width, decode_chunk_size=4,
    generator=torch.Generator().manual_seed(42), **face_optimization,
).frames[0]
export_to_video(frames, args.out, fps=8)
print(f"wrote {args.out}")
