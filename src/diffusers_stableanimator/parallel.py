"""Tile-parallel sampling: the processes of a torch.distributed group share one video's work.

Every process holds the whole pipeline and the whole latent video. At each denoising step a process runs the
UNet on its share of the temporal tiles; one all-gather gives every process every tile's guided output, and each
blends them in the single-process order, so all apply the same scheduler step to the same sums and hold the same
latents, equal to one process's to the last bit. (An all-reduce of per-process blended sums would move a little
less data but round differently; face optimisation's Adam steps, which normalise each gradient element, amplify
that rounding to ~2e-3 on the frames of the tiny test model.) The VAE decode and the face objective are shared by
decode chunks (the temporal decoder mixes the frames of a chunk, so a chunk is never split): the frames, and the
loss and gradient, are summed with one all-reduce, each process contributing zeros outside its own chunks, which
leaves every value exact.

One process is today's code path: `TileParallel.from_group` returns None for a group of one, and the pipeline
then takes no branch of this module.

    torchrun --nproc_per_node 2 my_script.py          # or: accelerate launch --num_processes 2 my_script.py
        torch.distributed.init_process_group()       # (accelerate.PartialState() does it under accelerate)
        pipe.enable_tile_parallel()
        frames = pipe(image, poses, face_embeds=..., generator=torch.Generator().manual_seed(0)).frames[0]

Every process must call the pipeline with the same inputs, seed and model; `check_agreement` compares
fingerprints of them before the first step and stops every process with one line if they differ.
"""

from __future__ import annotations

import hashlib
import math
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import PIL.Image
import torch
import torch.distributed as dist

from .errors import StableAnimatorError


class TileParallel:
    """One pipeline call's view of the process group: its rank, its share of a list of work, the sums."""

    def __init__(self, group: dist.ProcessGroup | None = None):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        # NCCL reduces CUDA tensors only; gloo reduces CPU tensors (and is what CPU runs and tests use).
        self.device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")

    @classmethod
    def from_group(cls, group: dist.ProcessGroup | None = None) -> TileParallel | None:
        """The group's view, or None where there is nothing to share (one process)."""
        if not dist.is_available() or not dist.is_initialized():
            raise StableAnimatorError(
                "Tile-parallel sampling needs torch.distributed: launch with `accelerate launch` or `torchrun` and call "
                "`torch.distributed.init_process_group()` (or `accelerate.PartialState()`) before `enable_tile_parallel()`."
            )
        return cls(group) if dist.get_world_size(group) > 1 else None

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence) -> list:
        """This process's contiguous block of `items` (block sizes differ by at most one; a block may be empty)."""
        return self.share_of(self.rank, items)

    def share_of(self, rank: int, items: Sequence) -> list:
        n = len(items)
        return list(items[rank * n // self.world_size : (rank + 1) * n // self.world_size])

    def all_gather_shares(self, mine: list[torch.Tensor], shapes: Sequence[tuple[int, ...]], device: torch.device) -> list[torch.Tensor]:
        """
        Every process's float32 results for its `share` of a list of items, in the items' order, on `device`, with
        one all-gather. `mine` are this process's results; `shapes` the shape of every item's result.
        """
        blocks = [self.share_of(rank, range(len(shapes))) for rank in range(self.world_size)]
        sizes = [sum(math.prod(shapes[i]) for i in block) for block in blocks]
        buffer = torch.zeros(max(sizes), device=self.device)  # all-gather needs one size: pad the shorter shares
        if mine:
            buffer[: sizes[self.rank]] = torch.cat([t.detach().reshape(-1).to(self.device, torch.float32) for t in mine])
        gathered = [torch.empty_like(buffer) for _ in range(self.world_size)]
        with self._collective("exchange"):
            dist.all_gather(gathered, buffer, group=self.group)
        results = []
        for rank, block in enumerate(blocks):
            offset = 0
            for i in block:
                n = math.prod(shapes[i])
                results.append(gathered[rank][offset : offset + n].view(shapes[i]).to(device))
                offset += n
        return results

    def all_reduce_sum(self, *tensors: torch.Tensor) -> None:
        """Replace each tensor by its sum over the processes, in place, with one collective for all of them."""
        flat = torch.cat([t.detach().reshape(-1).to(self.device, torch.float32) for t in tensors])
        with self._collective("sum"):
            dist.all_reduce(flat, group=self.group)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def check_agreement(self, fingerprints: dict[str, str]) -> None:
        """
        Compare `{what: hex digest}` across the processes (one all-gather of fixed size, so processes whose inputs
        differ, even in shape, never wait on mismatched collectives) and raise the same one-line error on every
        process when any digest differs from the main process's.
        """
        local = torch.tensor([list(bytes.fromhex(digest)) for digest in fingerprints.values()], dtype=torch.int64, device=self.device)
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        with self._collective("agreement check"):
            dist.all_gather(gathered, local, group=self.group)
        problems = []
        for k, what in enumerate(fingerprints):
            differ = [rank for rank in range(1, self.world_size) if not torch.equal(gathered[rank][k], gathered[0][k])]
            if differ:
                problems.append(f"{what} (process{'es' if len(differ) > 1 else ''} {', '.join(map(str, differ))} differ{'' if len(differ) > 1 else 's'} from process 0)")
        if problems:
            raise StableAnimatorError(
                f"Tile-parallel processes disagree on {'; '.join(problems)}: every process must get the same inputs, "
                f"seed and model files (this is process {self.rank} of {self.world_size})."
            )

    def computed_once(self, what: str, compute: Callable[[], Any]) -> Any:
        """`compute()` on the main process only, its result shared with every process: work that all need but one
        can do (the poses of a driving video). An error of the package's raises the same line on every process."""
        box = [None]
        if self.is_main_process:
            try:
                box[0] = compute()
            except StableAnimatorError as error:
                box[0] = error
        with self._collective(what):
            dist.broadcast_object_list(box, src=0 if self.group is None else dist.get_global_rank(self.group, 0), group=self.group)
        if isinstance(box[0], StableAnimatorError):
            raise box[0]
        return box[0]

    @contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        """A collective that fails (a process died, or stopped on an error of its own) becomes one line."""
        try:
            yield
        except (RuntimeError, dist.DistError) as error:
            reason = " ".join(str(error).split())[:200]
            raise StableAnimatorError(
                f"Tile-parallel {what} failed on process {self.rank} of {self.world_size}: another process stopped or "
                f"cannot be reached ({reason}); see that process's error. Nothing was written."
            ) from None


# ---------------------------------------------------------------------------------------------------- fingerprints
def fingerprint(*values: Any) -> str:
    """SHA-256 of values exactly (tensors and arrays by dtype, shape and bytes; images by mode, size and pixels)."""
    digest = hashlib.sha256()
    for value in values:
        _update(digest, value)
    return digest.hexdigest()


def _update(digest, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous()
        digest.update(f"tensor{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        digest.update(f"array{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, PIL.Image.Image):
        digest.update(f"image{value.mode}{value.size}".encode())
        digest.update(value.tobytes())
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _update(digest, item)
    else:
        digest.update(repr(value).encode())


@torch.no_grad()
def weights_fingerprint(modules: Iterable[torch.nn.Module | None]) -> str:
    """
    A checksum of model weights, cheap at full size: every tensor's name, dtype, shape, and its float64 sum and
    sum of squares, computed where the tensor lives. Two different model files do not agree on all of them.
    """
    parts = []
    for module in modules:
        if module is None:
            parts.append("none")
            continue
        sums = []
        for name, tensor in module.state_dict().items():
            parts.append(f"{name}{tensor.dtype}{tuple(tensor.shape)}")
            if tensor.numel():
                t = tensor.detach().double()
                sums.append(torch.stack([t.sum(), t.square().sum()]).cpu())
        parts.append(torch.cat(sums) if sums else torch.zeros(0))
    return fingerprint(*parts)


# ---------------------------------------------------------------------------------------------------- launchers
def launched_processes() -> int:
    """How many processes `accelerate launch` / `torchrun` started for this run (1 when started directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_launched_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def join_launched_group(device: torch.device) -> torch.device:
    """
    Join the process group that `accelerate launch` / `torchrun` describe in the environment (unless already
    joined, e.g. by accelerate's `PartialState`): NCCL on GPUs, gloo on CPUs. Returns this process's device: a
    plain "cuda" becomes its own GPU, `cuda:LOCAL_RANK`.
    """
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


class TileParallelMixin:
    """`enable_tile_parallel()` for a pipeline: share each call's tiles among the processes of a group."""

    _tile_parallel: TileParallel | None = None

    def enable_tile_parallel(self, group: dist.ProcessGroup | None = None) -> None:
        """
        Share each call's temporal tiles, VAE decode and face-optimisation chunks among the processes of `group`
        (default: the whole torch.distributed world, which must already be initialised). Every process must call the
        pipeline with the same arguments and seed; all return the same frames. With one process, nothing changes.
        """
        self._tile_parallel = TileParallel.from_group(group)

    def disable_tile_parallel(self) -> None:
        self._tile_parallel = None
