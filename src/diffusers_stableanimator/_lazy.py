"""Lazy public names for a package (PEP 562): `import diffusers_stableanimator` and the `stableanimator` command stay
fast, and torch, diffusers and transformers are imported only when a name that needs them is first used."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, names: dict[str, str]):
    """A module `__getattr__` that imports `names[name]` (a submodule, relative to `package`) on first use."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name], package), name)

    return __getattr__
