#!/usr/bin/env python
"""Measure a tiny puppet model on held-out puppets and write side-by-side pictures (issue 14).

    python examples/puppets/evaluate_tiny.py --out runs/eval [--model runs/tiny-puppet/pipeline] --cases 8 --threads 1

For each held-out puppet (`puppet_evaluation.held_out_case`: identities and motions never used in training) it
generates the frames with the trained model, with the same architecture untrained (`tiny_puppet.untrained_components`
plus the trained recognizer) and with face optimisation on, and compares them with repeating the reference frame.
Also measured: the ground truth through the VAE alone (the best the model could reach). Writes `report.json`
(means over cases: L1, PSNR, PSNR*, SSIM, pose error in pixels, missing parts, CSIM, seconds) and
`side_by_side_<i>.png`: one row per frame, reference | pose | generated | ground truth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for report.json and the pictures (must be new or empty)")
    p.add_argument("--model", default=None, help="a trained pipeline folder (default: the shipped tiny-puppet weights)")
    p.add_argument("--cases", type=int, default=8, help="held-out puppets")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="denoising steps")
    p.add_argument("--seeds", type=int, default=1, help="generation seeds per case")
    p.add_argument("--face-optimization", action="store_true", help="also measure with face optimisation on")
    p.add_argument("--pictures", type=int, default=2, help="side-by-side pictures to write (the first cases)")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def vae_reconstruction(vae, frames):
    """The ground truth through the VAE (encode, decode): what the model could reach at best."""
    import numpy as np
    import torch

    pixels = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        decoded = vae.decode(vae.encode(pixels).latent_dist.mode(), num_frames=len(frames)).sample
    return [np.asarray(f) for f in ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()]


def main(argv=None) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from diffusers_stableanimator import StableAnimatorPipeline
    from diffusers_stableanimator import puppet_evaluation as E
    from diffusers_stableanimator.tiny_puppet import load_tiny_puppet, untrained_components

    from diffusers_stableanimator.outputs import atomic_file, check_new_or_empty

    args = parse_args(argv)
    out = Path(args.out)
    check_new_or_empty(out, "--out")  # never write over someone's files
    if args.threads:
        torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_tiny_puppet() if args.model is None else StableAnimatorPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    recognizer = pipe.face_recognizer
    untrained = StableAnimatorPipeline(**{**untrained_components(0), "face_recognizer": recognizer})
    untrained.set_progress_bar_config(disable=True)
    results = {"trained": [], "untrained": [], "repeat_reference": [], "vae_reconstruction": [], "ground_truth": []}
    if args.face_optimization:
        results["trained_face_optimization"] = []
    seconds = {"trained": 0.0, "trained_face_optimization": 0.0}
    for index in range(args.cases):
        case = E.held_out_case(index, args.frames, recognizer=recognizer)
        results["repeat_reference"].append(E.evaluate(E.repeat_reference(case), case, recognizer))
        results["ground_truth"].append(E.evaluate(case.truth, case, recognizer))
        results["vae_reconstruction"].append(E.evaluate(vae_reconstruction(pipe.vae, case.truth), case, recognizer))
        for seed in range(args.seeds):
            t = time.perf_counter()
            frames = E.generate(pipe, case, args.steps, seed)
            seconds["trained"] += time.perf_counter() - t
            results["trained"].append(E.evaluate(frames, case, recognizer))
            results["untrained"].append(E.evaluate(E.generate(untrained, case, args.steps, seed), case, recognizer))
            if args.face_optimization:
                t = time.perf_counter()
                optimised = E.generate(pipe, case, args.steps, seed, face_optimization=True)
                seconds["trained_face_optimization"] += time.perf_counter() - t
                results["trained_face_optimization"].append(E.evaluate(optimised, case, recognizer))
            if index < args.pictures and seed == 0:
                rows = [np.concatenate([case.video.frames[0], pose, frame, truth], axis=1)
                        for pose, frame, truth in zip(case.video.pose_images[case.start:], frames, case.truth)]
                Image.fromarray(np.concatenate(rows, axis=0)).save(out / f"side_by_side_{index}.png")
        print(f"case {index}: trained {results['trained'][-1]}", flush=True)
    report = {name: E.mean_figures(figures) for name, figures in results.items() if figures}
    if args.face_optimization:  # per (case, seed) pairs: how often and by how much face optimisation raises CSIM
        gains = [b["csim"] - a["csim"] for a, b in zip(results["trained"], results["trained_face_optimization"])]
        report["face_optimization_csim_gain"] = {"mean": float(np.mean(gains)), "min": float(np.min(gains)),
                                                 "max": float(np.max(gains)), "raised": int(sum(g > 0 for g in gains)), "runs": len(gains)}
    # Per (case, seed) run: how often the trained model beats repeating the reference frame, figure by figure.
    copies = [copy for copy in results["repeat_reference"] for _ in range(args.seeds)]
    better = {"l1": lambda a, b: a < b, "psnr": lambda a, b: a > b, "psnr_star": lambda a, b: a > b, "ssim": lambda a, b: a > b,
              "pose_error_px": lambda a, b: a < b}
    report["trained_beats_repeat_reference"] = {name: int(sum(is_better(run[name], copy[name]) for run, copy in zip(results["trained"], copies)))
                                                for name, is_better in better.items()}
    report["trained_beats_repeat_reference"]["runs"] = len(copies)
    report["seconds_per_video"] = {k: v / (args.cases * args.seeds) for k, v in seconds.items() if v}
    report["settings"] = vars(args)
    atomic_file(out / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
