"""Sliding windows over time-ordered rows, never crossing a series boundary.

Rows are the time steps of one or more independent series laid end to end (each series contiguous
and oldest first, see `training.sequence_data`). A series is described by `segments`: the row index
where each series starts, plus the total row count. A window is T consecutive rows of one series;
it is named by its first row (`starts`) and it *closes* at its last row, start + T - 1.

Scoring is online: a row's score is the score of the window that closes at it, so it never uses
later rows; the first T - 1 rows of each series close no window and get no score.
"""

from __future__ import annotations

import numpy as np

from vae_anomaly.model.errors import InputError, InputIssue


def segment_bounds(series_ids: np.ndarray | None, n_rows: int) -> np.ndarray:
    """Start row of each contiguous run of equal series ids, then `n_rows`: shape (n_series + 1,).

    Without ids the whole input is one series. The ids must already be grouped (each series one
    contiguous run); a series id that reappears after another series is a caller bug.
    """
    if series_ids is None or n_rows == 0:
        return np.array([0, n_rows], dtype=np.int64)
    ids = np.asarray(series_ids)
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    return np.concatenate([[0], change, [n_rows]]).astype(np.int64)


def window_starts(bounds: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """First rows of every window of `window` rows, every `stride` rows, inside each segment.

    A segment shorter than `window` contributes none. Windows of one segment start at its first
    row, so with stride > 1 the last few rows of a segment may close no window.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive, got window={window}, stride={stride}")
    parts = [
        np.arange(start, end - window + 1, stride, dtype=np.int64)
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def closing_windows(bounds: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """For scoring every row: (starts, rows) of the stride-1 windows and the row each closes.

    Rows absent from `rows` (the first `window - 1` rows of each segment) get no score.
    """
    starts = window_starts(bounds, window, 1)
    return starts, starts + window - 1


def gather_windows(values: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """values (N, C) → windows (n, T, C) starting at `starts` (a copy, contiguous)."""
    index = starts[:, None] + np.arange(window)[None, :]  # (n, T)
    return values[index]


def require_rows(n_rows: int, window: int, field: str = "series") -> None:
    """Refuse an input that cannot close a single window, naming the field and the minimum."""
    if n_rows < window:
        raise InputError(
            [
                InputIssue(
                    (field, "data"),
                    f"{n_rows} rows given; the model's window is {window} rows, so at least {window} are needed",
                    "too_short",
                )
            ]
        )
