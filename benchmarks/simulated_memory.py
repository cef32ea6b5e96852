"""Peak GPU memory of a PyTorch program, computed on a machine without a GPU and without allocating anything.

The program runs on fake tensors (`torch._subclasses.FakeTensorMode`: shapes and dtypes, no data), so a full-size
training step at 512x512x16 takes seconds on a CPU. `LiveTensorBytes` counts every storage an operator creates from
its creation until it is freed; its peak is what `torch.cuda.max_memory_allocated` reports for the same program,
up to what is not modelled:

* kernel workspaces allocated inside one operator (cuBLAS/cuDNN, flash-attention scratch): a few hundred MiB;
* the caching allocator's rounding and fragmentation (`memory_reserved` > `memory_allocated`) and the CUDA context
  (about 0.5 GiB outside PyTorch's counters): budget 1-2 GiB on top of the peak shown.

The fake tensors live on the CPU (a CPU-only PyTorch cannot run autograd on fake CUDA tensors), so autocast is CPU
autocast. Its float16 policy matches CUDA's for matmuls, convolutions and attention, but keeps group/layer norms and
softmax in float16 where CUDA autocast computes them in float32: `cuda_autocast_policy()` restores CUDA's rule.
Attention dispatches to the CPU flash kernel, which saves what CUDA's flash kernel saves (output and log-sum-exp).
"""

from __future__ import annotations

import contextlib
import weakref

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of live tensor storages: those created by operators while the mode is active, plus those
    passed to `track` (weights created before it). `peak` is the most that was live at once."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._counted = WeakIdKeyDictionary()

    def track(self, tensors) -> None:
        for tensor in tensors:
            storage = tensor.untyped_storage()
            if storage in self._counted:  # already counted (another view of it)
                continue
            nbytes = storage.nbytes()
            self._counted[storage] = nbytes
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._release, nbytes)

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # Views and in-place results share an input's storage: no allocation, even if that input is not counted
        # (an untracked weight's transpose must not count as new memory).
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        self.track(t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in inputs)
        return out


# CUDA autocast's float32 list (aten/src/ATen/autocast_mode.cpp) for the functions a diffusion UNet applies to feature
# maps; the rest of that list (losses, exp/log on small tensors) does not move the peak.
_CUDA_FP32_FUNCTIONS = ("group_norm", "layer_norm", "softmax")


def _in_float32(function):
    def run(*args, **kwargs):
        if not torch.is_autocast_enabled("cpu"):
            return function(*args, **kwargs)
        with torch.autocast("cpu", enabled=False):
            return function(*_to_float32(args), **_to_float32(kwargs))

    return run


def _to_float32(tree):
    if isinstance(tree, torch.Tensor):
        return tree.float() if tree.is_floating_point() else tree
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_float32(x) for x in tree)
    if isinstance(tree, dict):
        return {k: _to_float32(v) for k, v in tree.items()}
    return tree


@contextlib.contextmanager
def cuda_autocast_policy():
    """Where CPU autocast is on, run group/layer norms and softmax in float32 as CUDA autocast does. Patches
    `torch.nn.functional` (what `nn.GroupNorm`/`nn.LayerNorm` call) rather than using a mode, so the rule also holds
    when checkpointed blocks are recomputed during backward."""
    originals = {name: getattr(F, name) for name in _CUDA_FP32_FUNCTIONS}
    try:
        for name, function in originals.items():
            setattr(F, name, _in_float32(function))
        yield
    finally:
        for name, function in originals.items():
            setattr(F, name, function)


def to_fake(module: torch.nn.Module, fake_mode) -> None:
    """Replace a module's parameters and buffers (built on the meta device, dtypes and `requires_grad` already set) by
    fake CPU tensors of the same shape and dtype. Assigned directly: `Module.to()` cannot convert fake parameters."""
    replaced = {}  # id -> (original, fake): shared (tied) tensors stay shared; originals kept alive so ids stay unique
    with fake_mode:
        for sub in module.modules():
            for table in (sub._parameters, sub._buffers):
                for name, tensor in table.items():
                    if tensor is None:
                        continue
                    if id(tensor) not in replaced:
                        fake = torch.zeros(tensor.shape, dtype=tensor.dtype)
                        fake = torch.nn.Parameter(fake, tensor.requires_grad) if isinstance(tensor, torch.nn.Parameter) else fake
                        replaced[id(tensor)] = (tensor, fake)
                    table[name] = replaced[id(tensor)][1]
