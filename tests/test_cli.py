"""The `stableanimator` command: its help costs no heavy import (the figure itself: benchmarks/bench_startup.py)."""

import subprocess
import sys


def test_help_imports_neither_torch_nor_diffusers():
    script = (
        "import sys\n"
        "from diffusers_stableanimator.cli import build_parser\n"
        "build_parser()\n"
        "import diffusers_stableanimator\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'cv2', 'onnxruntime') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_public_names_load_on_first_use_and_register_with_diffusers():
    script = (
        "import sys, diffusers_stableanimator as sa\n"
        "assert 'torch' not in sys.modules\n"
        "assert sa.StableAnimatorPipeline.__name__ == 'StableAnimatorPipeline'\n"
        "import diffusers\n"
        "from diffusers.pipelines import pipeline_loading_utils\n"
        "assert diffusers.StableAnimatorPipeline is sa.StableAnimatorPipeline\n"
        "assert 'PoseNet' in pipeline_loading_utils.LOADABLE_CLASSES['diffusers_stableanimator']\n"
        "assert sorted(sa.__all__) == sa.__all__ and all(getattr(sa, name) for name in sa.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
