"""outputs.py: overlap with inputs, what --overwrite may replace, staged commits, interrupts and permissions."""

import os
import signal
import stat
from pathlib import Path

import pytest

from diffusers_stableanimator.errors import StableAnimatorError
from diffusers_stableanimator.outputs import (
    StagedOutputs,
    check_not_inputs,
    check_replaceable_folder,
    check_writable,
    deferred_interrupts,
    own_frame_file,
    relation,
)


def test_relation_is_contains_and_lies_inside(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert relation(tmp_path / "a", tmp_path / "a" / "." ) == "is"
    assert relation(tmp_path / "a" / "b" / "x.mp4", tmp_path / "a") == "lies inside"
    assert relation(tmp_path, tmp_path / "a" / "b") == "contains"
    assert relation(tmp_path / "a", tmp_path / "c") is None
    os.symlink(tmp_path / "a", tmp_path / "link")
    assert relation(tmp_path / "link", tmp_path / "a") == "is"


def test_outputs_touching_inputs_or_each_other_are_refused(tmp_path):
    image = tmp_path / "ref.png"
    image.write_bytes(b"photo")
    with pytest.raises(StableAnimatorError, match=r"--frames-dir .* contains the input --image"):
        check_not_inputs({"--frames-dir": tmp_path}, {"--image": image})
    with pytest.raises(StableAnimatorError, match=r"--out .* is the input --video"):
        check_not_inputs({"--out": image}, {"--video": image})
    with pytest.raises(StableAnimatorError, match=r"--out .* lies inside --frames-dir"):
        check_not_inputs({"--out": tmp_path / "f" / "o.mp4", "--frames-dir": tmp_path / "f"}, {})
    check_not_inputs({"--out": tmp_path / "o.mp4", "--frames-dir": tmp_path / "frames"}, {"--image": image, "--video": None})


def test_only_own_frame_files_may_be_replaced(tmp_path):
    own = own_frame_file()
    assert own(Path("frame_0.png")) and own(Path("frame_12.png"))
    assert not own(Path("frame_.png")) and not own(Path("frame_1.jpg")) and not own(Path("holiday.png")) and not own(Path("frame_1a.png"))
    folder = tmp_path / "frames"
    folder.mkdir()
    check_replaceable_folder(folder, "--frames-dir", overwrite=False, own=own)  # empty: fine
    (folder / "frame_0.png").write_bytes(b"old")
    with pytest.raises(StableAnimatorError, match="pass --overwrite"):
        check_replaceable_folder(folder, "--frames-dir", overwrite=False, own=own)
    check_replaceable_folder(folder, "--frames-dir", overwrite=True, own=own)
    (folder / "holiday.jpg").write_bytes(b"the user's")
    with pytest.raises(StableAnimatorError, match=r"did not write \(holiday.jpg\)"):
        check_replaceable_folder(folder, "--frames-dir", overwrite=True, own=own)


def test_replaceable_folders_are_judged_all_the_way_down(tmp_path):
    own = own_frame_file()
    folder = tmp_path / "frames"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "frame_0.png").write_bytes(b"?")
    with pytest.raises(StableAnimatorError, match=r"did not write \(sub\)"):  # subfolders: not ours by default
        check_replaceable_folder(folder, "--frames-dir", overwrite=True, own=own)
    own_folders = lambda path: path == Path("sub")
    check_replaceable_folder(folder, "--frames-dir", overwrite=True, own=own, own_folders=own_folders)
    (folder / "sub" / "notes.txt").write_text("the user's")  # a user's file inside a folder of ours
    with pytest.raises(StableAnimatorError, match=r"did not write \(sub/notes.txt\)"):
        check_replaceable_folder(folder, "--frames-dir", overwrite=True, own=own, own_folders=own_folders)
    (folder / "sub" / "notes.txt").unlink()
    (folder / "frame_1.png").symlink_to(tmp_path / "elsewhere.png")  # a link is never ours, whatever its name
    with pytest.raises(StableAnimatorError, match=r"did not write \(frame_1.png\)"):
        check_replaceable_folder(folder, "--frames-dir", overwrite=True, own=own, own_folders=own_folders)


def test_unwritable_places_and_folders_given_as_files_are_refused(tmp_path):
    with pytest.raises(StableAnimatorError, match="is a folder; give a file path"):
        check_writable(tmp_path, "--out")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StableAnimatorError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "out.mp4", "--out")
    with pytest.raises(StableAnimatorError, match=r"--out /sys/out.mp4: cannot write in /sys"):  # read-only everywhere, root included
        check_writable("/sys/out.mp4", "--out")
    check_writable(tmp_path / "new" / "deeper" / "out.mp4", "--out")  # missing folders are created later
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe leaves nothing


def test_staged_outputs_appear_together_only_when_complete(tmp_path):
    (tmp_path / "out.mp4").write_bytes(b"old video")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "frame_0.png").write_bytes(b"old frame")
    with pytest.raises(RuntimeError, match="generation failed"):
        with StagedOutputs() as staged:
            staged.file(tmp_path / "out.mp4").write_bytes(b"new video")
            (staged.folder(tmp_path / "frames") / "frame_0.png").write_bytes(b"new frame")
            raise RuntimeError("generation failed")
    assert (tmp_path / "out.mp4").read_bytes() == b"old video"
    assert (tmp_path / "frames" / "frame_0.png").read_bytes() == b"old frame"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out.mp4"]  # no temporary names left

    with StagedOutputs() as staged:
        staged.file(tmp_path / "out.mp4").write_bytes(b"new video")
        (staged.folder(tmp_path / "frames") / "frame_1.png").write_bytes(b"new frame")
        assert (tmp_path / "out.mp4").read_bytes() == b"old video"  # nothing replaced before the end
    assert (tmp_path / "out.mp4").read_bytes() == b"new video"
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["frame_1.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out.mp4"]


def test_a_failed_run_removes_the_folders_it_created(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with StagedOutputs() as staged:
            staged.file(tmp_path / "a" / "b" / "out.mp4").write_bytes(b"partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_interrupts_wait_until_outputs_are_in_place():
    order = []
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # SIGINT is ignored under `cmd &`
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            order.append("finished the block")
    assert order == ["finished the block"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # handlers are restored


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_get_the_users_umask_and_replaced_folders_keep_their_mode(tmp_path, umask):
    previous = os.umask(umask)
    try:
        kept = tmp_path / "kept"
        kept.mkdir()
        os.chmod(kept, 0o750)
        with StagedOutputs() as staged:
            staged.file(tmp_path / "out.mp4").write_bytes(b"video")
            (staged.folder(tmp_path / "frames") / "frame_0.png").write_bytes(b"frame")
            staged.folder(kept)
    finally:
        os.umask(previous)
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "out.mp4") == 0o666 & ~umask
    assert mode(tmp_path / "frames") == 0o777 & ~umask
    assert mode(tmp_path / "frames" / "frame_0.png") == 0o666 & ~umask
    assert mode(kept) == 0o750
