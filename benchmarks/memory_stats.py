"""Peak-memory measurement shared by the benchmarks: CUDA allocator statistics on a GPU; on Linux CPU, the kernel's
peak resident set size (VmHWM), which `reset_peak` restarts from the current RSS."""

from __future__ import annotations

import ctypes
import os

import torch


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back first, so it does not count as resident
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def current_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
