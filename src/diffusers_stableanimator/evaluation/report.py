"""Results as JSON (for machines and for `--compare`) and as a table (for people)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import StableAnimatorError
from ..outputs import atomic_file

FORMAT = "stableanimator-evaluate/1"
# metric -> (column title, format, higher is better)
COLUMNS = {
    "l1": ("L1", "{:.3e}", False),
    "psnr": ("PSNR", "{:.2f}", True),
    "psnr_star": ("PSNR*", "{:.2f}", True),
    "ssim": ("SSIM", "{:.4f}", True),
    "lpips": ("LPIPS", "{:.4f}", False),
    "csim": ("CSIM", "{:.4f}", True),
    "fvd": ("FVD", "{:.2f}", False),
}


def _cell(metric: str, value) -> str:
    return "-" if value is None else COLUMNS[metric][1].format(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = lambda row: "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def format_table(results: dict) -> str:
    """Per video and overall, one column per metric (FVD only overall: it compares sets of videos)."""
    metrics = [m for m in COLUMNS if m in results["settings"]["metrics"]]
    header = ["video", "frames", *[COLUMNS[m][0] for m in metrics]]
    rows = [[name, str(v["frames"]), *[_cell(m, v.get(m)) for m in metrics]] for name, v in results["videos"].items()]
    overall = results["overall"]
    rows.append(["overall", str(overall["frames"]), *[_cell(m, overall.get(m)) for m in metrics]])
    text = _table(header, rows)
    return "\n".join([text, *[f"note: {note}" for note in results.get("notes", [])]])


def write_json(path: str | os.PathLike, results: dict) -> Path:
    text = json.dumps(results, indent=2, allow_nan=False) + "\n"
    return atomic_file(path, lambda tmp: Path(tmp).write_text(text))


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise StableAnimatorError(f"--compare {path} does not exist; give two results files written by `stableanimator evaluate --out`.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StableAnimatorError(f"--compare {path} is not a readable JSON file ({error}); give a results file written by `stableanimator evaluate --out`.") from None
    if not isinstance(results, dict) or results.get("format") != FORMAT:
        raise StableAnimatorError(f"--compare {path} is not a results file of `stableanimator evaluate` (format {FORMAT}); give one written by `stableanimator evaluate --out`.")
    return results


def compare(a: dict, b: dict, a_name: str = "a", b_name: str = "b") -> str:
    """The overall metrics of two runs side by side, their difference (b - a) and which run is better, then the
    settings that differ (two runs are comparable only when they match)."""
    metrics = [m for m in COLUMNS if m in a["overall"] or m in b["overall"]]
    rows = []
    for metric in metrics:
        va, vb = a["overall"].get(metric), b["overall"].get(metric)
        if va is None or vb is None:
            delta, better = "-", "-"
        else:
            delta = ("{:+.3e}" if metric == "l1" else "{:+.4f}").format(vb - va)
            better = "=" if va == vb else (b_name if (vb > va) == COLUMNS[metric][2] else a_name)
        rows.append([COLUMNS[metric][0], _cell(metric, va), _cell(metric, vb), delta, better])
    text = _table(["metric", a_name, b_name, f"{b_name} - {a_name}", "better"], rows)
    lines = [text]
    for key in ("model", "seed", "package_version"):
        if a.get(key) != b.get(key):
            lines.append(f"{key}: {a.get(key)!r} vs {b.get(key)!r}")
    settings_a, settings_b = a.get("settings", {}), b.get("settings", {})
    differ = sorted(k for k in set(settings_a) | set(settings_b) if settings_a.get(k) != settings_b.get(k) and k not in ("generated", "real"))
    if differ:
        lines.append("warning: the runs differ in settings " + ", ".join(f"{k} ({settings_a.get(k)!r} vs {settings_b.get(k)!r})" for k in differ) + "; their numbers are not directly comparable.")
    if sorted(a.get("videos", {})) != sorted(b.get("videos", {})):
        lines.append("warning: the runs evaluated different sets of videos.")
    return "\n".join(lines)
