"""Evaluation: the metrics StableAnimator's paper reports (L1, PSNR, PSNR*, SSIM, LPIPS, CSIM, FVD), computed the
way the table's public protocol (DisCo's `tool/metrics`) defines them. See docs/evaluation.md.

- `metrics`: the per-frame pixel metrics and the Fréchet distance (numpy/torch only).
- `lpips`: LPIPS with a VGG16 backbone, written in plain torch, loaded from the published files.
- `i3d`: the Kinetics-400 Inception-I3D used for FVD, written in plain torch, loaded from the published file.
- `identity`: CSIM, ArcFace cosine similarity with the package's face analyzer.
- `weights`: where the extractors' published weight files are looked for; loading them with one-line errors.
- `evaluator`: pairs videos, streams them frame by frame and aggregates the results.
- `self_driven`: the paper's self-driven protocol (generate each test video from its first frame and poses).
- `report`: results as JSON, as a table, and the difference of two result files.
- `command`: `stableanimator evaluate`.
"""

# The metrics, in the paper's column order (here so that `stableanimator --help` imports nothing heavy).
METRICS = ("l1", "psnr", "psnr_star", "ssim", "lpips", "csim", "fvd")
