"""examples/gradio_app.py, started on the tiny model and driven through Gradio's own Python client."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from a test

from example_scripts import load_example  # noqa: E402

from diffusers_stableanimator import Animator  # noqa: E402
from diffusers_stableanimator.preprocessing import write_video  # noqa: E402


def test_the_app_animates_and_reports_errors_as_messages(tmp_path, pose_models, face_models):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    Image.fromarray(np.full((384, 256, 3), 90, np.uint8)).save(tmp_path / "ref.png")
    video = write_video(tmp_path / "driving.mp4", [np.full((240, 320, 3), 20 * i, np.uint8) for i in range(3)], fps=8)
    det, pose = pose_models
    animator = Animator.load("tiny-random", face_models=face_models, det_model=det, pose_model=pose, device="cpu", say=lambda line: None)
    app = load_example("gradio_app.py").build_app(animator)
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(app.local_url, verbose=False)
        result = client.predict(handle_file(str(tmp_path / "ref.png")), handle_file(str(video)), 1, 3.0, 0, False, 3, api_name="/animate")
        out = Path(result["video"] if isinstance(result, dict) else result)
        assert out.suffix == ".mp4" and out.stat().st_size > 0
        tiny = tmp_path / "tiny.png"
        Image.new("RGB", (8, 8)).save(tiny)  # passes Gradio's own checks; the package's message reaches the user
        with pytest.raises(AppError, match="is 8x8 pixels; it needs at least 32 pixels a side"):
            client.predict(handle_file(str(tiny)), handle_file(str(video)), 1, 3.0, 0, False, 3, api_name="/animate")
    finally:
        app.close()
