"""`stableanimator animate-batch jobs.jsonl --out-dir DIR`: many animations, spread over GPUs by accelerate.

Each line of the jobs file is a JSON object with `image`, and `video` or `poses`, plus any `animate` option by
its long name (`{"image": "a.png", "video": "a.mp4", "steps": 20, "max_frames": 48}`); `out` (a file name in
DIR) defaults to the image's name with `.mp4`. Jobs whose output exists are skipped. Under
`accelerate launch --num_processes N stableanimator animate-batch ...` each process takes its share of the
jobs and runs on its own GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .animate import add_arguments as add_animate_arguments

    parser.add_argument("jobs", help="a .jsonl file, one job per line")
    parser.add_argument("--out-dir", required=True, help="folder for the outputs")
    # Every `animate` option is accepted as a default for all jobs; the per-job ones are filled from the file.
    defaults = argparse.ArgumentParser(add_help=False)
    add_animate_arguments(defaults)
    for action in defaults._actions:
        if action.dest in ("image", "video", "poses", "out", "help"):
            continue
        kwargs = {"default": action.default, "help": action.help}
        if isinstance(action, argparse._StoreTrueAction):
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=action.type, choices=action.choices)
        parser.add_argument(*action.option_strings, dest=action.dest, required=action.required, **kwargs)


def read_jobs(path: Path) -> list[dict]:
    jobs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            job = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg}).") from error
        if "image" not in job or ("video" in job) == ("poses" in job):
            raise ValueError(f"{path}:{number}: a job needs 'image' and exactly one of 'video' or 'poses'.")
        jobs.append(job)
    return jobs


def job_namespace(job: dict, defaults: argparse.Namespace, out_dir: Path) -> argparse.Namespace:
    values = vars(defaults).copy()
    for key in ("jobs", "out_dir", "_module", "command"):
        values.pop(key, None)
    unknown = set(job) - set(values) - {"image", "video", "poses", "out"}
    if unknown:
        raise ValueError(f"Unknown option(s) in job for {job['image']}: {', '.join(sorted(unknown))}.")
    values.update({"video": None, "poses": None, **job})
    values["out"] = str(out_dir / (job.get("out") or Path(job["image"]).with_suffix(".mp4").name))
    return argparse.Namespace(**values)


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .animate import AnimateError, animate

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        jobs = [job_namespace(job, args, out_dir) for job in read_jobs(Path(args.jobs))]
    except (OSError, ValueError) as error:
        print(f"stableanimator animate-batch: error: {error}", file=sys.stderr)
        return 2
    pending = [job for job in jobs if not Path(job.out).exists()]
    state = PartialState()
    if state.is_main_process:
        print(f"{len(jobs)} jobs, {len(jobs) - len(pending)} already done, {len(pending)} to run on {state.num_processes} process(es).")
    failures = 0
    with state.split_between_processes(pending) as mine:
        for job in mine:
            if args.device is None and state.device.type == "cuda":
                job.device = str(state.device)
            try:
                for path in animate(job):
                    print(f"wrote {path}")
            except (AnimateError, FileNotFoundError, ValueError, ImportError) as error:
                failures += 1
                print(f"job {job.image} -> {job.out} failed: {error}", file=sys.stderr)
    return 1 if failures else 0
