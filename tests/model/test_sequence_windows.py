"""model.kinds.sequence.windows: windows never cross a series, strides, rows that get no score."""

from __future__ import annotations

import numpy as np
import pytest

from vae_anomaly.model.errors import InputError
from vae_anomaly.model.kinds.sequence.windows import (
    closing_windows,
    gather_windows,
    require_rows,
    segment_bounds,
    window_starts,
)


def test_segment_bounds_one_series_and_several():
    assert segment_bounds(None, 5).tolist() == [0, 5]
    ids = np.array(["a", "a", "a", "b", "b", "c"])
    assert segment_bounds(ids, len(ids)).tolist() == [0, 3, 5, 6]
    assert segment_bounds(np.array([], dtype=object), 0).tolist() == [0, 0]


def test_windows_never_cross_a_series_boundary():
    ids = np.array([0] * 5 + [1] * 4)
    bounds = segment_bounds(ids, len(ids))
    starts = window_starts(bounds, window=3)
    assert starts.tolist() == [0, 1, 2, 5, 6]
    values = np.arange(len(ids), dtype=np.float64)[:, None]  # row index as the only sensor
    windows = gather_windows(values, starts, 3)
    assert windows.shape == (5, 3, 1)
    for window in windows[..., 0]:
        assert len(set(ids[window.astype(int)].tolist())) == 1, window
        assert np.all(np.diff(window) == 1)


def test_stride_and_a_series_shorter_than_the_window():
    bounds = np.array([0, 10, 12])  # the second series has 2 rows: no window of 4 fits
    assert window_starts(bounds, window=4, stride=3).tolist() == [0, 3, 6]
    assert window_starts(bounds, window=4, stride=4).tolist() == [0, 4]
    assert window_starts(bounds, window=13).tolist() == []
    with pytest.raises(ValueError, match="stride"):
        window_starts(bounds, window=4, stride=0)


def test_rows_before_the_first_full_window_get_no_score():
    bounds = np.array([0, 6, 9])
    starts, rows = closing_windows(bounds, window=3)
    assert rows.tolist() == [2, 3, 4, 5, 8]  # rows 0, 1 and 6, 7 close no window
    assert (rows - starts + 1 == 3).all()


def test_too_short_input_names_the_field_and_the_minimum():
    require_rows(5, 5)
    with pytest.raises(InputError) as info:
        require_rows(4, 5)
    issue = info.value.issues[0]
    assert issue.loc == ("series", "data") and issue.type == "too_short"
    assert "4 rows given" in issue.msg and "at least 5" in issue.msg
