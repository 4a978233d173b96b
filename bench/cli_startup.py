"""How long `vae-anomaly --help`, `--version` and `<command> --help` take (issue 14 item 12).

Each command line runs `--runs` times as a fresh process (the installed console script beside this
interpreter); the median and the range of the wall times are printed, one JSON line per command.
No `--help` imports torch, numpy or pandas, `train`'s included (tests/training/test_cli.py checks
the modules): `train` reads its defaults from the torch-free `training.config` and its `--family`
choices from the family registry's names, which load no family module.

    python -m bench.cli_startup --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (
    ["--help"],
    ["--version"],
    *([name, "--help"] for name in ("train", "score", "evaluate", "encode", "serve", "demo")),
)


def wall_seconds(argv: list[str], runs: int) -> list[float]:
    """Wall time of `runs` fresh processes running `argv` (stdout discarded)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="processes per command line (default: 5)")
    args = parser.parse_args(argv)
    script = Path(sys.executable).with_name("vae-anomaly")
    for words in COMMANDS:
        times = wall_seconds([str(script), *words], args.runs)
        print(
            json.dumps(
                {
                    "command": " ".join(["vae-anomaly", *words]),
                    "runs": args.runs,
                    "median_s": round(statistics.median(times), 3),
                    "min_s": round(min(times), 3),
                    "max_s": round(max(times), 3),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
