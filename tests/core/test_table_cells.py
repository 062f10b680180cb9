"""One rule for a missing table cell (datamint_core.wire.is_missing), wherever tables come in."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from datamint_core.wire import as_resources, is_missing


@pytest.mark.parametrize(
    ("cell", "missing"),
    [
        (None, True),
        (math.nan, True),
        (np.float64("nan"), True),
        (np.float32("nan"), True),
        (0.0, False),
        ("", False),
        ("nan", False),
        (np.array([math.nan]), False),  # a list cell is a value, whatever it holds
        ([], False),
    ],
)
def test_a_cell_is_missing_when_it_is_none_or_nan(cell, missing: bool) -> None:
    assert is_missing(cell) is missing


def test_a_dataframe_row_without_a_column_other_rows_have_reads_as_if_it_had_none() -> None:
    pixels = {"encoding": "list", "data": np.zeros((4, 4)).tolist(), "dtype": "float32"}
    frame = pd.DataFrame(
        [
            {"kind": "image", "id": "with", "pixel_data": pixels, "spacing": [0.5, 0.5]},
            {"kind": "image", "id": "without", "pixel_data": pixels},
        ]
    )
    assert frame["spacing"].isna().tolist() == [False, True]  # pandas pads it with NaN
    with_spacing, without = as_resources(frame)
    assert with_spacing.spacing == (0.5, 0.5)
    assert without.spacing == as_resources([{"kind": "image", "pixel_data": pixels}])[0].spacing
