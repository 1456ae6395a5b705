"""Helpers the stages share: decoded images for a table, small text tables."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from src.artifacts import Experiment
from src.data.cache import CachePolicy, decode_table
from src.formats.base import ImageTable


def decoded_images(
    exp: Experiment,
    table: ImageTable,
    quiet: bool,
    log: Callable[[str], None],
    label: str,
    skip_unreadable: bool | None = None,
):
    """(cached images: [n, S, S, 3] uint8 or a packed store, boolean mask of readable rows) of a TRAINING table via
    the on-disk cache, as the config's data section caches them (or from data.prebuilt_cache when set)."""
    skip = exp.config.data.skip_unreadable if skip_unreadable is None else skip_unreadable
    data = exp.config.data
    policy = CachePolicy.from_data(data)
    return decode_table(
        table.paths,
        data.image_size,
        exp.cache_dir,
        skip,
        quiet,
        log,
        label,
        data.max_pixels,
        policy,
        data.prebuilt_cache,
        data.root,
    )


def table_text(rows: list[dict], float_format: str = "{:.4f}") -> str:
    """A plain aligned text table."""
    frame = pd.DataFrame(rows)
    return frame.to_string(index=False, float_format=lambda value: float_format.format(value))


def fold_numbers(fold_of_row) -> list[int]:
    """The folds that hold rows out (-1 = never held out)."""
    return sorted(int(k) for k in np.unique(fold_of_row) if k >= 0)
