"""The example scripts under examples/ imported as modules, so tests call their functions in-process."""

import importlib.util
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(relative_path: str):
    """`examples/<relative_path>` as a module named after its file (registered in sys.modules, as an import would)."""
    path = EXAMPLES / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
