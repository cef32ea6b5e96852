"""Seconds for `stableanimator --help` and `stableanimator animate --help` (target: under 1 s each).

    python benchmarks/bench_startup.py [--repeats 5]
"""

import argparse
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for command in (["--help"], ["animate", "--help"]):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "diffusers_stableanimator.cli", *command], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        print(f"stableanimator {' '.join(command)}: median {statistics.median(times):.2f} s, max {max(times):.2f} s over {args.repeats} runs")


if __name__ == "__main__":
    main()
