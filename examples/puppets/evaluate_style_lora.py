#!/usr/bin/env python
"""Measure a style LoRA on held-out puppets drawn in its style: base model against base + LoRA (issue 14).

    python examples/puppets/evaluate_style_lora.py --out runs/eval-thick-pastel [--base FOLDER] [--lora FOLDER] --cases 6 --seeds 2 --threads 1

Held-out puppets (`puppet_evaluation.held_out_case(style=THICK_PASTEL)`: identities and motions never used in
training, reference and targets in the style) are animated by `--base` and by `--base` with `--lora` loaded, with the
same generation seeds. `report.json` holds, per model, the means over cases and seeds of L1, PSNR, PSNR*, SSIM,
pose error, missing parts and `puppet_saturation` (how vivid the puppet is painted: the style is pale), each case
and seed's figures, the styled ground truth's saturation, and the same puppets drawn unstyled (how far the default
look is from the style).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for report.json (must be new or empty)")
    p.add_argument("--base", default=None, help="the base pipeline folder (default: the shipped tiny-puppet weights)")
    p.add_argument("--lora", default=None, help="the LoRA folder or file (default: the shipped one, tiny_puppet.THICK_PASTEL_LORA)")
    p.add_argument("--cases", type=int, default=6, help="held-out puppets")
    p.add_argument("--seeds", type=int, default=2, help="generation seeds per case")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="denoising steps")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def load_models(base=None, lora=None):
    """(base pipeline, base pipeline with the LoRA) in float32; the defaults are the shipped weights."""
    import torch

    from diffusers_stableanimator import StableAnimatorPipeline
    from diffusers_stableanimator.tiny_puppet import THICK_PASTEL_LORA, load_tiny_puppet

    def load():
        pipe = load_tiny_puppet() if base is None else StableAnimatorPipeline.from_pretrained(str(base), dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    styled = load()
    styled.load_lora_weights(str(lora or THICK_PASTEL_LORA))
    return load(), styled


def measure(base_pipe, lora_pipe, cases: int, seeds: int, frames: int = 8, steps: int = 10) -> dict:
    """Per model ("base", "lora"): a list of (case, seed, figures); plus "unstyled_truth": the same puppets
    drawn in the default style; "styled_truth": the truth's own saturation."""
    from diffusers_stableanimator import puppet_evaluation as E
    from diffusers_stableanimator.puppets import THICK_PASTEL

    results = {"base": [], "lora": [], "unstyled_truth": [], "styled_truth": []}
    for index in range(cases):
        case = E.held_out_case(index, frames, recognizer=base_pipe.face_recognizer, style=THICK_PASTEL)
        unstyled = E.held_out_case(index, frames).truth
        results["unstyled_truth"].append((index, None, {**E.pixel_metrics(unstyled, case.truth), "puppet_saturation": E.puppet_saturation(unstyled, case)}))
        results["styled_truth"].append((index, None, {"puppet_saturation": E.puppet_saturation(case.truth, case)}))
        for seed in range(seeds):
            for name, pipe in (("base", base_pipe), ("lora", lora_pipe)):
                generated = E.generate(pipe, case, steps, seed)
                figures = {**E.evaluate(generated, case), "puppet_saturation": E.puppet_saturation(generated, case)}
                results[name].append((index, seed, figures))
                print(f"case {index} seed {seed} {name}: {figures}", flush=True)
    return results


def main(argv=None) -> dict:
    import torch

    from diffusers_stableanimator import puppet_evaluation as E
    from diffusers_stableanimator.outputs import atomic_file, check_new_or_empty

    args = parse_args(argv)
    out = Path(args.out)
    check_new_or_empty(out, "--out")  # never write over someone's files
    if args.threads:
        torch.set_num_threads(args.threads)
    results = measure(*load_models(args.base, args.lora), args.cases, args.seeds, args.frames, args.steps)
    report = {name: E.mean_figures([f for *_, f in rows]) for name, rows in results.items()}
    report["per_case"] = {name: [{"case": c, "seed": s, **f} for c, s, f in rows] for name, rows in results.items()}
    report["settings"] = vars(args)
    out.mkdir(parents=True, exist_ok=True)
    atomic_file(out / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    print(json.dumps({k: v for k, v in report.items() if k != "per_case"}, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
