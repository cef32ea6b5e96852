"""Tile-parallel speed-up: seconds per denoising step on 1 process and on N processes, in one run.

    python benchmarks/bench_tile_parallel.py                               # CPU: mid-size random model, 1 vs 2 processes
    python benchmarks/bench_tile_parallel.py --device cuda --arch full     # GPUs: 1 vs all GPUs, full-size random weights

Each repetition launches a fresh group of processes per process count, alternating (1, N, 1, N, ...), so slow
drifts of a shared machine hit both counts alike. On CPU every process runs one thread (a CPU-bound speed-up
needs one core per process: run it on an otherwise idle machine with at least N cores). Every process builds the
same random model (same seed), calls the pipeline with the same inputs and seed after `enable_tile_parallel()`,
and times each denoising step with `callback_on_step_end`; the first step is a warm-up and is not counted. The
decode is not timed (`output_type="latent"`). The script prints the median seconds per step for each count and
the ratio, and on CPU also the CPU seconds per step of the busiest process (all its threads, gloo's included):
their ratio is the speed-up a machine with a free core per process would show, and it holds on a shared machine
where the wall-clock ratio does not.

`--arch mid` (the CPU default) is a 7 M-parameter StableAnimator UNet (3 levels, 32/64/128 channels) at
128x128, where one tile's forward takes about half a second on one core, so the per-step exchange of tile
outputs is small beside the UNet. `--arch full` is the full-size SVD-xt architecture (random weights, no
download), for GPUs. The tile layout decides the best possible ratio: 64 frames in tiles of 16 overlapping by 6
are 6 tiles (3 per process on 2); with the default overlap 4 they are 5 tiles, at best 5/3 = 1.67x on 2 processes.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from datetime import timedelta


def mid_size_pipeline():
    import torch

    from diffusers_stableanimator import StableAnimatorPipeline
    from diffusers_stableanimator.models import StableAnimatorUNetModel
    from diffusers_stableanimator.testing import tiny_random_components

    components = tiny_random_components(seed=0)
    torch.manual_seed(10)
    components["unet"] = StableAnimatorUNetModel(
        block_out_channels=(32, 64, 128), layers_per_block=2,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32, num_attention_heads=(2, 4, 8), addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24, num_frames=16,
    )
    return StableAnimatorPipeline(**components), 128


def full_size_pipeline(device):
    from diffusers_stableanimator import StableAnimatorPipeline
    from diffusers_stableanimator.testing import full_size_random_components

    return StableAnimatorPipeline(**full_size_random_components(device=device)), None


def worker(rank: int, world_size: int, port: int, args, queue) -> None:
    import torch
    import torch.distributed as dist

    from diffusers_stableanimator.testing import synthetic_inputs

    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    else:
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    if args.arch == "mid":
        pipe, size = mid_size_pipeline()
    else:
        pipe, size = full_size_pipeline(device)
    if device.type == "cuda":
        pipe = pipe.to(device=device, dtype=torch.float16)
    pipe.set_progress_bar_config(disable=True)
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size, timeout=timedelta(minutes=10))
        pipe.enable_tile_parallel()
    width, height = (size, size) if size else (args.width, args.height)
    image, poses, face_embeds = synthetic_inputs(args.frames, size=max(width, height))
    poses = [pose.resize((width, height)) for pose in poses]
    stamps = []

    def stamp(pipe, step, timestep, tensors):
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append((time.perf_counter(), time.process_time()))
        return {}

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = (time.perf_counter(), time.process_time())
    pipe(image, poses, face_embeds=face_embeds, height=height, width=width, num_inference_steps=args.steps,
         tile_size=args.tile_size, tile_overlap=args.tile_overlap, output_type="latent",
         generator=torch.Generator().manual_seed(0), callback_on_step_end=stamp)
    # (wall, CPU) seconds of each step; the first step (warm-up) is not counted
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip([start, *stamps], stamps)][1:]
    queue.put((rank, steps))
    if world_size > 1:
        dist.destroy_process_group()


def run_group(world_size: int, args) -> list[float]:
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.Queue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    processes = [context.Process(target=worker, args=(rank, world_size, port, args, queue)) for rank in range(world_size)]
    for process in processes:
        process.start()
    per_rank = dict(queue.get(timeout=args.timeout) for _ in processes)
    for process in processes:
        process.join()
    if any(process.exitcode for process in processes):
        sys.exit(f"a benchmark process failed (exit codes {[p.exitcode for p in processes]})")
    wall = [step[0] for step in per_rank[0]]
    cpu = [max(per_rank[rank][k][1] for rank in per_rank) for k in range(len(wall))]  # the busiest process
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--arch", choices=("mid", "full"), default=None, help="default: mid on CPU, full on CUDA")
    parser.add_argument("--processes", type=int, default=None, help="N (default: 2 on CPU, every GPU on CUDA)")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="denoising steps per run (the first is a warm-up)")
    parser.add_argument("--tile-size", type=int, default=16)
    parser.add_argument("--tile-overlap", type=int, default=6)
    parser.add_argument("--width", type=int, default=512, help="--arch full only")
    parser.add_argument("--height", type=int, default=512, help="--arch full only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    args.arch = args.arch or ("full" if args.device == "cuda" else "mid")
    if args.processes is None:
        import torch

        args.processes = torch.cuda.device_count() if args.device == "cuda" else 2
    from diffusers_stableanimator.tiling import temporal_tiles

    tiles = len(temporal_tiles(args.frames, args.tile_size, args.tile_overlap))
    print(f"{args.arch} model on {args.device}, {args.frames} frames, {tiles} tiles of {args.tile_size} (overlap {args.tile_overlap}), "
          f"{args.steps - 1} timed steps, 1 vs {args.processes} processes, {args.repeats} interleaved repetitions", flush=True)
    counts = (1, args.processes)
    wall = {count: [] for count in counts}
    cpu = {count: [] for count in counts}
    for repeat in range(args.repeats):
        for count in counts:
            steps_wall, steps_cpu = run_group(count, args)
            wall[count].extend(steps_wall)
            cpu[count].extend(steps_cpu)
            print(f"  repetition {repeat + 1}: {count} process(es): {statistics.median(steps_wall):.3f} s/step "
                  f"({statistics.median(steps_cpu):.3f} CPU s/step in the busiest process)", flush=True)
    n = args.processes
    for count in counts:
        print(f"{count} process(es): {statistics.median(wall[count]):.3f} s per step, {statistics.median(cpu[count]):.3f} CPU s per step "
              f"in the busiest process (medians of {len(wall[count])} steps)")
    print(f"speed-up 1 -> {n} processes: {statistics.median(wall[1]) / statistics.median(wall[n]):.2f}x in seconds, "
          f"{statistics.median(cpu[1]) / statistics.median(cpu[n]):.2f}x in the busiest process's CPU time "
          f"(best possible with {tiles} tiles: {tiles / -(-tiles // n):.2f}x)")


if __name__ == "__main__":
    main()
