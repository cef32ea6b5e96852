"""Writing outputs without ever losing a user's file: the one home of every command's output rules.

- An output never is, contains or lies inside an input (`check_not_inputs`).
- `--overwrite` replaces only what the command itself would write (`check_replaceable_file`,
  `check_replaceable_folder`); a folder holding anything else is refused, with or without it.
- Every output is written under a temporary name beside its target and moved into place only once all of a
  run's outputs are complete (`StagedOutputs`); a failed or interrupted run keeps the old outputs and leaves no
  partial or temporary file behind.
- New files and folders get the user's umask (temporary files are created private, then opened up when they
  are moved into place); a replaced folder keeps the permissions of the folder it replaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Mapping

from .errors import StableAnimatorError

PARTIAL = ".partial"  # in every temporary name, so a leftover is recognisable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _open_up(path: Path, like: Path | None = None) -> None:
    """Give a temporary file or folder the mode a normal new one would have (or that of `like`)."""
    if like is not None and like.exists():
        shutil.copymode(like, path)
    else:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def relation(output: str | os.PathLike, source: str | os.PathLike) -> str | None:
    """How `output` overlaps `source`: "is", "lies inside", "contains", or None."""
    out, src = _resolved(output), _resolved(source)
    if out == src or (out.exists() and src.exists() and os.path.samefile(out, src)):
        return "is"
    if src in out.parents:
        return "lies inside"
    if out in src.parents:
        return "contains"
    return None


def check_not_inputs(outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Refuse any output that is, contains or lies inside an input, or another output. Keys are the names the
    user typed (`"--out"`, `"output"`)."""
    outputs = {name: path for name, path in outputs.items() if path}
    others = {name: path for name, path in inputs.items() if path}
    for name, path in outputs.items():
        for other, source in others.items():
            how = relation(path, source)
            if how:
                raise StableAnimatorError(f"{name} {path} {how} the input {other} {source}; choose an output outside your inputs (nothing was written).")
    for name, path in outputs.items():
        for other, other_path in outputs.items():
            how = relation(path, other_path) if other != name else None
            if how in ("is", "lies inside"):
                raise StableAnimatorError(f"{name} {path} {how} {other} {other_path}; give them separate places.")


def _nearest_existing(path: Path) -> Path:
    path = _resolved(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, name: str, folder: bool = False) -> None:
    """Refuse, before any work, an output whose folder cannot be written (read-only, immutable, not a folder),
    and a file output that is an existing folder."""
    path = Path(path)
    if not folder and path.is_dir():
        raise StableAnimatorError(f"{name} {path} is a folder; give a file path, such as {path / ('output' + (path.suffix or '.mp4'))}.")
    if folder and path.exists() and not path.is_dir():
        raise StableAnimatorError(f"{name} {path} exists and is not a folder; give a folder path.")
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise StableAnimatorError(f"{name} {path}: {parent} is a file, not a folder; choose another place.")
    try:  # the only reliable test (permissions, read-only mounts, immutable folders): create a file and remove it
        with tempfile.TemporaryFile(dir=parent, prefix=f".{PARTIAL}"):
            pass
    except OSError as error:
        raise StableAnimatorError(f"{name} {path}: cannot write in {parent} ({error.strerror or error}); choose a folder you can write to.") from None


def check_new_or_empty(folder: str | os.PathLike, name: str) -> None:
    """Refuse, before any work, an output folder that already holds something (commands that write many files into
    a folder of their own never mix them with someone else's)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise StableAnimatorError(f"{name} {folder} is not empty; give a new or empty folder.")
    check_writable(folder, name, folder=True)


def check_replaceable_file(path: str | os.PathLike, name: str, overwrite: bool) -> None:
    if Path(path).exists() and not overwrite:
        raise StableAnimatorError(f"{name} {path} exists; choose another {name} or pass --overwrite to replace it.")


def no_folders(path: Path) -> bool:
    """`own_folders` of a command that writes files only: every subfolder is someone else's."""
    return False


def foreign_entries(folder: str | os.PathLike, own: Callable[[Path], bool],
                    own_folders: Callable[[Path], bool] = no_folders) -> list[str]:
    """What inside `folder` a command did not write, as paths relative to it. Everything is judged by its relative
    path: files by `own`, subfolders by `own_folders` (default: none is ours). Links are never ours."""
    folder = Path(folder)
    entries = sorted(folder.rglob("*"))  # does not descend into linked folders
    return [str(entry.relative_to(folder)) for entry in entries
            if entry.is_symlink() or not (own_folders if entry.is_dir() else own)(entry.relative_to(folder))]


def shown(names: list[str], limit: int = 3) -> str:
    """The first `limit` of `names`, for a message."""
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_replaceable_folder(folder: str | os.PathLike, name: str, overwrite: bool, own: Callable[[Path], bool],
                             own_folders: Callable[[Path], bool] = no_folders) -> None:
    """A folder output may replace an existing folder only if it is empty, or holds nothing but what this command
    writes (`foreign_entries`) and `overwrite` is given."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    foreign = foreign_entries(folder, own, own_folders)
    if foreign:
        raise StableAnimatorError(f"{name} {folder} holds files this command did not write ({shown(foreign)}); it replaces only its own outputs: choose an empty or new folder.")
    if any(folder.iterdir()) and not overwrite:
        raise StableAnimatorError(f"{name} {folder} holds earlier outputs; pass --overwrite to replace them, or choose another folder.")


@contextlib.contextmanager
def deferred_interrupts():
    """Hold Ctrl-C and SIGTERM until the block is done, so that moving outputs into place is never cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            raise KeyboardInterrupt


def _replace_folder(staging: Path, target: Path) -> None:
    """Move a finished folder into place; an old `target` is moved aside first and deleted only afterwards."""
    _open_up(staging, like=target if target.is_dir() else None)
    if not target.exists():
        os.replace(staging, target)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old", suffix=PARTIAL, dir=target.parent))
    os.rmdir(backup)
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


class StagedOutputs:
    """A run's outputs, written under temporary names beside their targets and moved into place together when the
    `with` block ends without an error; on an error or an interrupt every temporary name is removed instead.

        with StagedOutputs() as staged:
            write_video(staged.file("out.mp4"), frames)
            write_frames(staged.folder("frames"), frames)
    """

    def __init__(self):
        self._staged: list[tuple[Path, Path]] = []
        self._created: list[Path] = []  # parent folders made for the outputs, removed again if nothing is written

    def _parent(self, target: Path) -> Path:
        missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
        target.parent.mkdir(parents=True, exist_ok=True)
        self._created.extend(missing)  # deepest first
        return target.parent

    def file(self, target: str | os.PathLike) -> Path:
        """A temporary path for `target` (same folder, same extension, so writers pick the same format)."""
        target = Path(target)
        fd, temporary = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f"{PARTIAL}{target.suffix}", dir=self._parent(target))
        os.close(fd)
        self._staged.append((Path(temporary), target))
        return Path(temporary)

    def folder(self, target: str | os.PathLike) -> Path:
        """A temporary folder that replaces `target` as a whole."""
        target = Path(target)
        temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=PARTIAL, dir=self._parent(target)))
        self._staged.append((temporary, target))
        return temporary

    def commit(self) -> list[Path]:
        with deferred_interrupts():
            for temporary, target in self._staged:
                if temporary.is_dir():
                    _replace_folder(temporary, target)
                else:
                    _open_up(temporary)
                    os.replace(temporary, target)
        targets = [target for _, target in self._staged]
        self._staged, self._created = [], []
        return targets

    def discard(self) -> None:
        for temporary, _ in self._staged:
            if temporary.is_dir():
                shutil.rmtree(temporary, ignore_errors=True)
            else:
                temporary.unlink(missing_ok=True)
        for folder in self._created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        self._staged, self._created = [], []

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def atomic_file(target: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write one file through `write(temporary_path)` and move it into place only once complete."""
    with StagedOutputs() as staged:
        write(staged.file(target))
    return Path(target)


def own_frame_file(pattern: str = "frame_{i}.png") -> Callable[[Path], bool]:
    """`own` for `check_replaceable_folder`: the numbered frame files this package writes."""
    prefix, _, suffix = pattern.partition("{i}")
    return lambda path: path.name.startswith(prefix) and path.name.endswith(suffix) and path.name[len(prefix) : len(path.name) - len(suffix)].isdigit()
