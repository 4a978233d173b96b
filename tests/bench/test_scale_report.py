"""`python -m bench.scale --report`: the results file (JSON lines, one per step) as the table of
docs/BENCHMARKS.md, peak RSS as a multiple of the smallest size's, missing steps said so."""

from __future__ import annotations

import json
from pathlib import Path

from bench.scale import done_steps, report


def test_report_and_resume(tmp_path: Path):
    results = tmp_path / "results.jsonl"
    lines = [
        {"environment": {}, "argv": []},
        {"rows": 1_000_000, "step": "train", "peak_rss_mb": 600, "rows_per_second": 19000},
        {"rows": 1_000_000, "step": "score", "peak_rss_mb": 700, "rows_per_second": 7000},
        {"rows": 4_000_000, "step": "train", "peak_rss_mb": 660, "rows_per_second": 18000},
    ]
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert report(results).splitlines()[2:] == [
        "| 1 000 000 | 600 MB (×1.00) | 19 000 | 700 MB (×1.00) | 7 000 |",
        "| 4 000 000 | 660 MB (×1.10) | 18 000 | not measured |  |",
    ]
    assert done_steps(results) == {(1_000_000, "train"), (1_000_000, "score"), (4_000_000, "train")}
