"""Where `vae-anomaly score` writes its results: JSON lines on stdout, or an --out file whose suffix
picks the format (.jsonl keeps each result as it is; .csv and .parquet take one flat row per result).

The suffix is checked before any work starts, so a wrong one fails in a second, not after scoring."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from vae_anomaly.training.data import DataError

OUT_SUFFIXES = (".jsonl", ".csv", ".parquet")

Result = dict[str, object]


@contextlib.contextmanager
def progress_bar(total: int, unit: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr for scoring `total` inputs; shown only when stderr is a terminal (tqdm's
    `disable=None`), so pipes, files and CI logs stay clean. Yields its `update(n)`."""
    from tqdm import tqdm

    with tqdm(total=total, unit=unit, desc="scoring", file=sys.stderr, disable=None, leave=False) as bar:
        yield bar.update


def check_out_path(path: Path | None) -> None:
    """Refuse an unsupported --out (raises `DataError` naming the suffixes that work)."""
    if path is not None and path.suffix.lower() not in OUT_SUFFIXES:
        raise DataError(f"{path}: --out must end in {', '.join(OUT_SUFFIXES)}")


def write_results(path: Path | None, results: list[Result], flat: Callable[[Result], Result], unit: str) -> None:
    """JSON lines on stdout when `path` is None; else .jsonl, or `flat` rows as .csv / .parquet.
    Says on stderr how many `unit`s went where."""
    if path is None:
        lines = (orjson.dumps(result) + b"\n" for result in results)
        out = getattr(sys.stdout, "buffer", None)  # None when stdout is redirected to text (tests, notebooks)
        for line in lines:
            if out is None:
                sys.stdout.write(line.decode())
            else:
                out.write(line)
        sys.stdout.flush()
        return
    check_out_path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in results))
    else:
        import pandas as pd  # not loaded for JSON lines

        frame = pd.DataFrame([flat(r) for r in results])
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    print(f"{len(results)} {unit}s scored → {path}", file=sys.stderr)
