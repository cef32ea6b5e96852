"""Plain-Python inference with the package's API: reference photo + driving video (or pose folder) -> mp4.

    python examples/inference.py --model path/or/repo --image ref.png --video driving.mp4 --face-models ~/models/antelopev2

`stableanimator animate` is a thin layer over the same calls. Each step can be used alone: prepare the reference
once and animate it along several driving videos, or save the extracted poses to look at them first.
"""

import argparse

from diffusers_stableanimator import Animator

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True, help="converted pipeline folder or Hub repo id")
parser.add_argument("--image", required=True)
parser.add_argument("--video", required=True, help="driving video (mp4, or a folder of its frames)")
parser.add_argument("--face-models", required=True, help="antelopev2 folder (scrfd_10g_bnkps.onnx, glintr100.onnx)")
parser.add_argument("--out", default="animation.mp4")
parser.add_argument("--steps", type=int, default=25)
args = parser.parse_args()

# The models, loaded once: the pipeline (half precision and the "balanced" memory preset on a GPU), face analysis,
# and DWPose (from the documented model folder, on first use).
animator = Animator.load(args.model, face_models=args.face_models)

# The reference at the trained size nearest its aspect ratio, with its face embedding (the training recipe).
reference = animator.prepare_reference(args.image)
print(f"output size {reference.width}x{reference.height}")

# Driving poses in memory: detected, aligned to the reference body, drawn as in training, with face boxes.
# (`animator.animate` also takes the path of a driving video or of an extract-poses folder directly.)
poses = animator.extract_poses(args.video, reference)

# Face optimisation runs when the model has a face recognizer and face boxes exist ("auto").
animation = animator.animate(reference, poses, steps=args.steps, guidance=3.0, seed=42)
for path in animation.save(args.out):
    print(f"wrote {path}")
