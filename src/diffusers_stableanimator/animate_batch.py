"""`stableanimator animate-batch jobs.jsonl --out-dir DIR`: many animations, spread over GPUs by accelerate.

Each line of the jobs file is a JSON object with `image`, and `video` or `poses`, plus any `animate` option by
its long name (`{"image": "a.png", "video": "a.mp4", "steps": 20, "max_frames": 48}`); `out` (a file name in
DIR) defaults to the image's name with `.mp4`. Jobs whose output exists are skipped. Under
`accelerate launch --num_processes N stableanimator animate-batch ...` each process takes its share of the
jobs and runs on its own GPU; each process loads the models once for all its jobs. A line that is not a valid job is reported and skipped, and a job that fails is
reported without stopping the others; the exit status is 1 when any job was skipped or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext, redirect_stdout
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("jobs", help="a .jsonl file, one job per line")
    parser.add_argument("--out-dir", required=True, help="folder for the outputs")
    # Every `animate` option is accepted as a default for all jobs; the per-job ones are filled from the file.
    for action in job_parser()._actions:
        if action.dest in ("image", "video", "poses", "out", "help"):
            continue
        kwargs = {"default": action.default, "help": action.help}
        if isinstance(action, argparse._StoreTrueAction):
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=action.type, choices=action.choices)
        parser.add_argument(*action.option_strings, dest=action.dest, required=action.required, **kwargs)


def _check_value(action: argparse.Action, value):
    """A job's value for one option, checked like the command line would (types, choices)."""
    name = action.option_strings[0] if action.option_strings else action.dest
    if isinstance(action, argparse._StoreTrueAction):
        ok = isinstance(value, bool)
        expected = "true or false"
    elif action.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "a whole number"
    elif action.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number"
    else:
        ok = isinstance(value, str)
        expected = "a string"
    if value is not None and not ok:
        raise ValueError(f"{name.lstrip('-').replace('-', '_')!r} must be {expected}, got {json.dumps(value)}")
    if value is not None and action.choices and value not in action.choices:
        raise ValueError(f"{name.lstrip('-').replace('-', '_')!r} must be one of {', '.join(map(str, action.choices))}, got {json.dumps(value)}")


def read_jobs(path: Path, parser: argparse.ArgumentParser) -> tuple[list[tuple[int, dict]], list[str]]:
    """(line number, job) for every valid line, and one message per invalid line (those jobs are skipped)."""
    actions = {action.dest: action for action in parser._actions}
    jobs, problems = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            job = json.loads(line)
            if not isinstance(job, dict):
                raise ValueError(f"a job is a JSON object ({{\"image\": ..., \"video\": ...}}), got {type(job).__name__}")
            if not isinstance(job.get("image"), str) or sum(isinstance(job.get(key), str) for key in ("video", "poses")) != 1 or ("video" in job) == ("poses" in job):
                raise ValueError("a job needs 'image' and exactly one of 'video' or 'poses', each a path string")
            if "out" in job and not (isinstance(job["out"], str) and job["out"] and Path(job["out"]).name == job["out"]):
                raise ValueError("'out' must be a file name (it is written in --out-dir)")
            unknown = set(job) - set(actions) - {"image", "video", "poses", "out"}
            if unknown:
                raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
            for key, value in job.items():
                if key in actions and key not in ("image", "video", "poses", "out"):
                    _check_value(actions[key], value)
        except json.JSONDecodeError as error:
            problems.append(f"{path}:{number}: not valid JSON ({error.msg}); job skipped.")
        except ValueError as error:
            problems.append(f"{path}:{number}: {error}; job skipped.")
        else:
            jobs.append((number, job))
    return jobs, problems


def job_namespace(job: dict, defaults: argparse.Namespace, out_dir: Path) -> argparse.Namespace:
    values = vars(defaults).copy()
    for key in ("jobs", "out_dir", "_module", "command"):
        values.pop(key, None)
    values.update({"video": None, "poses": None, **job})
    values["out"] = str(out_dir / (job.get("out") or Path(job["image"]).with_suffix(".mp4").name))
    return argparse.Namespace(**values)


def job_parser() -> argparse.ArgumentParser:
    from .animate import add_arguments as add_animate_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_animate_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .animate import animate
    from .outputs import check_writable

    animators = {}  # the models, loaded once per process for every job that uses the same ones

    def animator_for(job):
        from .animate import load_face_analyzer
        from .animator import Animator

        key = tuple(str(getattr(job, name)) for name in ("model", "dtype", "device", "memory", "face_models", "det_model", "pose_model"))
        if key not in animators:
            animators[key] = Animator.load_for_command(job, load_face_analyzer(job) if job.face_models else None)
        return animators[key]

    jobs_file, out_dir = Path(args.jobs), Path(args.out_dir)
    if not jobs_file.is_file():
        raise FileNotFoundError(f"jobs file {jobs_file} does not exist; give a .jsonl file with one JSON job per line.")
    check_writable(out_dir, "--out-dir", folder=True)
    valid, problems = read_jobs(jobs_file, job_parser())
    jobs = [(number, job_namespace(job, args, out_dir)) for number, job in valid]
    pending = [(number, job) for number, job in jobs if not Path(job.out).exists()]
    import torch

    # cpu=True lets accelerate see a CPU launch's processes (gloo) instead of falling back to one process.
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    # Fewer jobs than processes: rather than leave processes idle, all of them share each job's tiles, one job at a time.
    together = 0 < len(pending) < state.num_processes
    if state.is_main_process:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(jobs) + len(problems)} jobs, {len(jobs) - len(pending)} already done, {len(problems)} invalid, "
              f"{len(pending)} to run on {state.num_processes} process(es)"
              + (", each shared by all processes (tile-parallel)." if together else "."))
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    with nullcontext(pending) if together else state.split_between_processes(pending) as mine:
        for number, job in mine:
            if args.device is None and state.device.type == "cuda":
                job.device = str(state.device)
            try:
                # Sharing a job, the main process speaks for all (each still reports its errors on stderr).
                with redirect_stdout(open(os.devnull, "w")) if together and not state.is_main_process else nullcontext():
                    for path in animate(job, animator=animator_for(job), tile_parallel=together):
                        print(f"wrote {path}")
            except Exception as error:  # one failing job never stops the others; KeyboardInterrupt still does
                failures += 1
                print(f"{jobs_file}:{number}: job {job.image} -> {job.out} failed: {' '.join(str(error).split())}", file=sys.stderr)
    return 1 if failures or problems else 0
