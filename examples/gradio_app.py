"""A Gradio app: reference image + driving video in, animation out, with the memory presets.

    pip install gradio "diffusers-stableanimator[all]"
    python examples/gradio_app.py --model path/or/repo --face-models ~/models/antelopev2

Gradio is an optional extra: it is imported only here. The app calls the same code as
`stableanimator animate`, so every option behaves as in the command line.
"""

import argparse
import tempfile
from pathlib import Path

from diffusers_stableanimator.animate import add_arguments, animate

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--face-models", help="antelopev2 folder")
parser.add_argument("--det-model")
parser.add_argument("--pose-model")
parser.add_argument("--share", action="store_true")
cli = parser.parse_args()

try:
    import gradio as gr
except ImportError as error:
    raise SystemExit("This example needs Gradio: pip install gradio") from error


def run(image_path, video_path, memory, steps, guidance, seed, face_optimization, max_frames):
    if not image_path or not video_path:
        raise gr.Error("Give a reference image and a driving video.")
    out = Path(tempfile.mkdtemp()) / "animation.mp4"
    defaults = argparse.ArgumentParser()
    add_arguments(defaults)
    args = defaults.parse_args([
        "--model", cli.model, "--image", image_path, "--video", video_path, "--out", str(out),
        "--memory", memory, "--steps", str(int(steps)), "--guidance", str(guidance), "--seed", str(int(seed)),
        "--face-optimization", "auto" if face_optimization else "off", "--max-frames", str(int(max_frames)),
        *(["--face-models", cli.face_models] if cli.face_models else ["--allow-no-face"]),
        *(["--det-model", cli.det_model] if cli.det_model else []),
        *(["--pose-model", cli.pose_model] if cli.pose_model else []),
    ])
    try:
        animate(args)
    except Exception as error:  # show the message in the UI rather than a stack trace
        raise gr.Error(str(error)) from error
    return str(out)


with gr.Blocks(title="StableAnimator") as demo:
    gr.Markdown("# StableAnimator\nOne reference photo + a driving video -> the person in the photo, moving.")
    with gr.Row():
        image = gr.Image(type="filepath", label="Reference photo")
        video = gr.Video(label="Driving video")
        result = gr.Video(label="Animation")
    with gr.Row():
        memory = gr.Radio(["high", "balanced", "low"], value="balanced", label="Memory preset")
        steps = gr.Slider(5, 50, value=25, step=1, label="Steps")
        guidance = gr.Slider(1.0, 6.0, value=3.0, step=0.1, label="Guidance")
        seed = gr.Number(value=42, precision=0, label="Seed")
        max_frames = gr.Number(value=64, precision=0, label="Max frames")
        face_opt = gr.Checkbox(value=True, label="Face optimisation")
    gr.Button("Animate").click(run, [image, video, memory, steps, guidance, seed, face_opt, max_frames], result)

demo.launch(share=cli.share)
