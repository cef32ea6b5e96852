"""A Gradio app on the package's API: reference photo + driving video in, animation out.

    pip install gradio "diffusers-stableanimator[all]"
    python examples/gradio_app.py --model path/or/repo --face-models ~/models/antelopev2

Gradio is an optional extra: it is imported only here. The models are loaded once when the app starts; each
request prepares its reference, extracts its poses and animates, with the same checks and one-line errors as
`stableanimator animate`.
"""

import argparse
import tempfile
from pathlib import Path

from diffusers_stableanimator import Animator
from diffusers_stableanimator.errors import StableAnimatorError

try:
    import gradio as gr
except ImportError as error:
    raise SystemExit("This example needs Gradio: pip install gradio") from error


def build_app(animator: Animator, allow_no_face: bool = False) -> gr.Blocks:
    """The web app on loaded models: each request prepares its reference, extracts its poses and animates."""

    def run(image_path, video, steps, guidance, seed, face_optimization, max_frames, progress=gr.Progress(track_tqdm=True)):
        video_path = video.get("video") if isinstance(video, dict) else video
        if not image_path or not video_path:
            raise gr.Error("Give a reference image and a driving video.")
        try:
            reference = animator.prepare_reference(image_path, allow_no_face=allow_no_face)
            poses = animator.extract_poses(video_path, reference, max_frames=int(max_frames))
            animation = animator.animate(reference, poses, steps=int(steps), guidance=float(guidance), seed=int(seed),
                                         face_optimization="auto" if face_optimization else "off")
            out = Path(tempfile.mkdtemp()) / "animation.mp4"
            animation.save(out)
        except (StableAnimatorError, OSError, ValueError) as error:  # the message, not a stack trace
            raise gr.Error(str(error)) from error
        return str(out)

    with gr.Blocks(title="StableAnimator") as demo:
        gr.Markdown("# StableAnimator\nOne reference photo + a driving video -> the person in the photo, moving.")
        with gr.Row():
            image = gr.Image(type="filepath", label="Reference photo")
            video = gr.Video(label="Driving video")
            result = gr.Video(label="Animation")
        with gr.Row():
            steps = gr.Slider(1, 50, value=25, step=1, label="Steps")
            guidance = gr.Slider(1.0, 6.0, value=3.0, step=0.1, label="Guidance")
            seed = gr.Number(value=42, precision=0, label="Seed")
            max_frames = gr.Number(value=64, precision=0, label="Max frames")
            face_opt = gr.Checkbox(value=True, label="Face optimisation")
        gr.Button("Animate").click(run, [image, video, steps, guidance, seed, face_opt, max_frames], result, api_name="animate")
    return demo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--face-models", help="antelopev2 folder (without it: no identity guidance)")
    parser.add_argument("--det-model")
    parser.add_argument("--pose-model")
    parser.add_argument("--memory", choices=("high", "balanced", "low"), default="balanced")
    parser.add_argument("--share", action="store_true")
    cli = parser.parse_args()
    animator = Animator.load(cli.model, face_models=cli.face_models, det_model=cli.det_model, pose_model=cli.pose_model, memory=cli.memory)
    build_app(animator, allow_no_face=cli.face_models is None).launch(share=cli.share)


if __name__ == "__main__":
    main()
