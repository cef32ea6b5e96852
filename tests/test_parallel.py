"""Tile-parallel sampling: 2 CPU processes (gloo) against one process without torch.distributed; processes that
disagree, and a process that dies."""

import os
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusers_stableanimator.errors import StableAnimatorError
from diffusers_stableanimator.parallel import TileParallel, fingerprint
from diffusers_stableanimator.testing import synthetic_inputs, tiny_random_pipeline

WORLD_SIZE = 2
REFERENCE_BOX = (12, 6, 52, 50)
# Frame counts with tile_size 4, overlap 1: 7 -> 2 tiles (one per process), 10 -> 3 tiles (uneven), 3 -> 1 tile
# (one process idle). Decode chunks: 4 of 2 frames, 4 of 3 or 1, and one chunk of all frames (not shared). Face
# optimisation refines the first step only (`end_step` 0): enough to check it, and fast.
CASES = {
    "7 frames, 2 tiles": dict(num_frames=7, decode_chunk_size=2),
    "10 frames, 3 tiles": dict(num_frames=10, decode_chunk_size=3, min_guidance_scale=1.0),
    "3 frames, 1 tile": dict(num_frames=3),
    "10 frames, face optimisation (full)": dict(num_frames=10, decode_chunk_size=3, face_optimization={"mode": "full", "chunk_size": 3, "end_step": 0}),
    "4 frames, face optimisation (face_crop, one chunk)": dict(num_frames=4, face_optimization={"end_step": 0}),
}


def boxes(num_frames):
    return [None if k % 3 == 1 else (16 + k, 8, 48, 40 + k % 2) for k in range(num_frames)]


def run_case(pipe, num_frames, seed=0, **kwargs):
    image, poses, face_embeds = synthetic_inputs(num_frames)
    if "face_optimization" in kwargs:
        kwargs.update(face_boxes=boxes(num_frames), reference_face_box=REFERENCE_BOX)
    return pipe(image, poses, face_embeds=face_embeds, num_inference_steps=2, tile_size=4, tile_overlap=1, output_type="np",
                generator=torch.Generator().manual_seed(seed), **kwargs).frames[0]


# ---------------------------------------------------------------------------------------------------- workers
def _task_equivalence(rank):
    pipe = tiny_random_pipeline()
    pipe.enable_tile_parallel()
    return {name: run_case(pipe, **case) for name, case in CASES.items()}


def _task_bad_launches(rank):
    """Rank 1 differs in the seed, then in the model, then in the inputs (every process must report each); then
    rank 1 crashes and rank 0 must stop with an error, not wait."""
    errors = []
    for pipe, seed, frames in ((tiny_random_pipeline(), rank, 4), (tiny_random_pipeline(seed=rank), 0, 4), (tiny_random_pipeline(), 0, 4 + rank)):
        pipe.enable_tile_parallel()
        try:
            run_case(pipe, frames, seed=seed)
            errors.append(None)
        except StableAnimatorError as error:
            errors.append(str(error))
    if rank == 1:
        torch.save({"ok": errors}, Path(os.environ["TEST_OUT"]) / "rank1.pt")
        os._exit(3)  # a crash: no error message, no goodbye to the group
    try:
        run_case(pipe, 4)
        errors.append(None)
    except StableAnimatorError as error:
        errors.append(str(error))
    return errors


def _task_commands(rank):
    """`stableanimator animate` and `animate-batch` (one job) as `accelerate launch` runs them: the environment names
    the process group; the commands join it."""
    import contextlib
    import io

    from diffusers_stableanimator.cli import main

    out = Path(os.environ["TEST_OUT"])
    results = []
    for argv in (_animate_argv(out, "parallel"), _batch_argv(out)):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(argv)
        results.append((code, stdout.getvalue(), stderr.getvalue()))
    return results


def _task_video(rank):
    """`animate --video` as `accelerate launch` runs it: returns (exit code, DWPose runs here, stdout)."""
    import contextlib
    import io
    import json

    from diffusers_stableanimator.cli import main
    from diffusers_stableanimator.preprocessing.dwpose import DWPoseDetector

    out = Path(os.environ["TEST_OUT"])
    det, pose = json.loads((out / "models.json").read_text())
    calls = []
    detect_video = DWPoseDetector.detect_video
    DWPoseDetector.detect_video = lambda self, *args, **kwargs: (calls.append(rank), detect_video(self, *args, **kwargs))[1]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main(_video_argv(out, "parallel", det, pose))
    return code, len(calls), stdout.getvalue()


TASKS = {"equivalence": _task_equivalence, "bad launches": _task_bad_launches, "commands": _task_commands, "video": _task_video}
FAST = ["--steps", "2", "--tile-size", "4", "--tile-overlap", "1", "--allow-no-face", "--device", "cpu", "--memory", "high"]


def _job_files(folder: Path):
    image, poses, _ = synthetic_inputs(7)
    image.save(folder / "ref.png")
    (folder / "poses").mkdir()
    for i, pose in enumerate(poses):
        pose.save(folder / "poses" / f"frame_{i}.png")


def _animate_argv(folder: Path, name: str):
    return ["animate", "--model", "tiny-random", "--image", str(folder / "ref.png"), "--poses", str(folder / "poses"),
            "--out", str(folder / f"{name}.mp4"), "--frames-dir", str(folder / f"{name}_frames"), *FAST]


def _video_argv(folder: Path, name: str, det, pose):
    return ["animate", "--model", "tiny-random", "--image", str(folder / "ref.png"), "--video", str(folder / "driving.mp4"),
            "--det-model", str(det), "--pose-model", str(pose), "--out", str(folder / f"{name}.mp4"),
            "--frames-dir", str(folder / f"{name}_frames"), *FAST]


def _batch_argv(folder: Path):
    (folder / "jobs.jsonl").write_text(f'{{"image": "{folder / "ref.png"}", "poses": "{folder / "poses"}", "out": "batch.mp4"}}\n')
    return ["animate-batch", str(folder / "jobs.jsonl"), "--out-dir", str(folder / "batch"), "--model", "tiny-random", *FAST]


def _worker(rank, port, task, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)  # two processes on a shared CPU
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TEST_OUT=out_dir)
    if task in ("commands", "video"):  # as `accelerate launch` / `torchrun` leave it: the commands start the group themselves
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), LOCAL_WORLD_SIZE=str(WORLD_SIZE))
    else:
        dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60))
    try:
        result = {"ok": TASKS[task](rank)}
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}"}
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_context():
    """Processes forked from a server that imported the package once and never ran torch (not from the test process,
    whose thread pools a fork would copy), so each pair starts in a second, not after ~9 s of imports as with "spawn"
    ("spawn" where there is no forkserver)."""
    if "forkserver" not in torch.multiprocessing.get_all_start_methods():
        return torch.multiprocessing.get_context("spawn")
    context = torch.multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["diffusers_stableanimator.pipeline_stableanimator", "diffusers_stableanimator.cli"])
    return context


def spawn(task, tmp_path, timeout=120):
    """Run `task` on 2 gloo processes; returns {rank: result} for the ranks that wrote one."""
    context = _start_context()
    port = _free_port()
    processes = [context.Process(target=_worker, args=(rank, port, task, str(tmp_path))) for rank in range(WORLD_SIZE)]
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(deadline - time.monotonic(), 1))
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
    assert not hung, f"process(es) {hung} still running after {timeout}s"
    return {rank: torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE) if (tmp_path / f"rank{rank}.pt").exists()}


# ---------------------------------------------------------------------------------------------------- tests
def test_two_processes_match_one(tmp_path):
    results = spawn("equivalence", tmp_path)
    assert all("ok" in results[rank] for rank in range(WORLD_SIZE)), results
    pipe = tiny_random_pipeline()  # one process, no torch.distributed: today's code path
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: another thread count changes the kernels' own sums
    try:
        singles = {name: run_case(pipe, **case) for name, case in CASES.items()}
    finally:
        torch.set_num_threads(threads)
    for name, single in singles.items():
        for rank in range(WORLD_SIZE):
            frames = results[rank]["ok"][name]
            assert frames.shape == single.shape
            # The issue allows the order of float sums to differ; the tiles are blended in one order, so measured: 0.
            assert np.abs(frames - single).max() <= 1e-5, (name, rank, np.abs(frames - single).max())
        # every process applies the same steps to the same sums: they agree exactly
        assert np.array_equal(results[0]["ok"][name], results[1]["ok"][name]), name


@pytest.fixture(scope="module")
def bad_launches(tmp_path_factory):
    start = time.monotonic()
    results = spawn("bad launches", tmp_path_factory.mktemp("bad"))
    return results, time.monotonic() - start


def test_processes_that_disagree_stop_with_one_line_each(bad_launches):
    results, _ = bad_launches
    for rank in range(WORLD_SIZE):
        seed, model, inputs = results[rank]["ok"][:3]
        for message, what in ((seed, "the seed"), (model, "the model"), (inputs, "the inputs")):
            assert message is not None and "\n" not in message
            assert f"disagree on {what}" in message and "process 1 differs from process 0" in message, message
            assert f"process {rank} of 2" in message
        assert "the inputs" not in seed and "the seed" not in model


def test_a_process_that_dies_stops_the_others(bad_launches):
    results, seconds = bad_launches
    error = results[0]["ok"][3]
    assert error is not None and error.startswith("Tile-parallel") and "another process stopped" in error, error
    assert "\n" not in error
    assert seconds < 60  # the peer's closed connection is noticed at once, not at the 60 s timeout


def test_animate_and_animate_batch_under_a_launcher(tmp_path):
    import imageio.v2 as imageio

    from diffusers_stableanimator.cli import main

    _job_files(tmp_path)
    results = spawn("commands", tmp_path)
    (animate0, batch0), (animate1, batch1) = results[0]["ok"], results[1]["ok"]
    assert animate0[0] == animate1[0] == batch0[0] == batch1[0] == 0, results
    assert "denoising 2 tiles on 2 processes" in animate0[1] and f"wrote {tmp_path / 'parallel.mp4'}" in animate0[1]
    assert animate1[1] == ""  # the main process speaks and writes for all
    assert "1 to run on 2 process(es), each shared by all processes (tile-parallel)" in batch0[1]
    assert "denoising 2 tiles on 2 processes" in batch0[1] and batch1[1] == ""
    assert (tmp_path / "batch" / "batch.mp4").is_file()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers
    try:
        assert main(_animate_argv(tmp_path, "single")) == 0
    finally:
        torch.set_num_threads(threads)
    for k in range(7):
        single = imageio.imread(tmp_path / "single_frames" / f"frame_{k}.png")
        assert np.array_equal(imageio.imread(tmp_path / "parallel_frames" / f"frame_{k}.png"), single)


def test_animate_video_under_a_launcher_extracts_the_poses_once(tmp_path, pose_models):
    # The main process runs DWPose and shares the poses; the frames equal a single process's.
    import json

    import imageio.v2 as imageio

    from diffusers_stableanimator.cli import main
    from diffusers_stableanimator.preprocessing import write_video

    _job_files(tmp_path)
    write_video(tmp_path / "driving.mp4", [np.full((96, 64, 3), 40 * i, np.uint8) for i in range(5)], fps=8)
    (tmp_path / "models.json").write_text(json.dumps([str(p) for p in pose_models]))
    results = spawn("video", tmp_path)
    (code0, calls0, out0), (code1, calls1, out1) = results[0]["ok"], results[1]["ok"]
    assert code0 == code1 == 0 and calls0 > 0 and calls1 == 0, results  # DWPose ran on the main process only
    assert f"wrote {tmp_path / 'parallel.mp4'}" in out0 and out1 == ""

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers
    try:
        assert main(_video_argv(tmp_path, "single", *pose_models)) == 0
    finally:
        torch.set_num_threads(threads)
    for k in range(5):
        single = imageio.imread(tmp_path / "single_frames" / f"frame_{k}.png")
        assert np.array_equal(imageio.imread(tmp_path / "parallel_frames" / f"frame_{k}.png"), single)


# ---------------------------------------------------------------------------------------------------- pieces
class _Fake(TileParallel):
    def __init__(self, rank, world_size):
        self.rank, self.world_size = rank, world_size


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7])
@pytest.mark.parametrize("world_size", [2, 3])
def test_shares_cover_every_item_once_in_order(n, world_size):
    shares = [_Fake(rank, world_size).share(list(range(n))) for rank in range(world_size)]
    assert sum(shares, []) == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_fingerprint_sees_values_shapes_and_dtypes():
    x = torch.arange(6.0)
    assert fingerprint(x) == fingerprint(x.clone())
    assert fingerprint(x) != fingerprint(x.reshape(2, 3))
    assert fingerprint(x) != fingerprint(x.double())
    y = x.clone()
    y[5] = torch.nextafter(y[5], torch.tensor(10.0))  # one ulp
    assert fingerprint(x) != fingerprint(y)
    assert fingerprint(x.bfloat16(), 3, "a") == fingerprint(x.bfloat16(), 3, "a")


def test_enable_without_torch_distributed_says_how_to_launch():
    with pytest.raises(StableAnimatorError, match="accelerate launch"):
        tiny_random_pipeline().enable_tile_parallel()
