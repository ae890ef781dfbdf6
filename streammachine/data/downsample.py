"""Downsampling a line for the screen: min/max per bucket.

A chart ``width`` pixels wide cannot show more than a minimum and a maximum
per pixel column; sending more points costs bytes and browser time and shows
nothing new. ``minmax_indices`` keeps, for each of ``buckets`` equal spans
of x, the point with the lowest and the point with the highest y (and the
first and last points), so spikes survive where averaging or striding would
hide them. Pure numpy, O(n log n); x must be sorted (time series are).
"""

from __future__ import annotations

import numpy as np


def minmax_indices(x, y, buckets: int) -> np.ndarray:
    """Sorted indices of the points to draw: the min and max y of each of ``buckets`` equal x spans.

    At most ``2 * buckets + 2`` indices; every index when there are no more
    points than that. NaN y values are never chosen (a bucket of NaNs only
    keeps nothing). Among equal values the earliest is the minimum and the
    latest the maximum.
    """
    if isinstance(buckets, bool) or not isinstance(buckets, (int, np.integer)) or buckets < 1:
        raise ValueError(f"buckets={buckets!r}: expected an int >= 1")
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y: expected 1-d arrays of one length, got shapes {xs.shape} and {ys.shape}")
    n = len(ys)
    if n <= 2 * buckets + 2:
        return np.arange(n)
    span = xs[-1] - xs[0]
    if span > 0:
        bucket = np.minimum(((xs - xs[0]) * (buckets / span)).astype(np.int64), buckets - 1)
    else:
        bucket = np.zeros(n, dtype=np.int64)
    valid = np.flatnonzero(~np.isnan(ys))  # buckets span all of x; only the points with a y compete
    if len(valid) == 0:
        return valid
    bucket, ys = bucket[valid], ys[valid]
    # x sorted: bucket numbers never decrease, so each bucket is one run of positions
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(valid)]
    order = valid[np.lexsort((ys, bucket))]  # by bucket, then y; stable, so ties keep position order
    ends_kept = [i for i in (0, n - 1) if i in (valid[0], valid[-1])]
    chosen = np.concatenate((np.array(ends_kept, dtype=np.int64), order[starts], order[ends - 1]))
    return np.unique(chosen)
