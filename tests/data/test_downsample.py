"""min/max downsampling against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from streammachine.data.downsample import minmax_indices


def reference(x, y, buckets):
    n = len(y)
    if n <= 2 * buckets + 2:
        return list(range(n))
    chosen = {0, n - 1}
    span = x[-1] - x[0]
    groups: dict = {}
    for i in range(n):
        if np.isnan(y[i]):
            continue
        b = min(int((x[i] - x[0]) * (buckets / span)), buckets - 1) if span > 0 else 0
        groups.setdefault(b, []).append(i)
    for members in groups.values():
        low = min(members, key=lambda i: (y[i], i))
        high = max(members, key=lambda i: (y[i], i))
        chosen |= {low, high}
    if np.isnan(y).any():
        chosen = {i for i in chosen if not np.isnan(y[i])}
    return sorted(chosen)


@pytest.mark.parametrize("seed", range(25))
def test_minmax_matches_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    x = np.sort(rng.integers(0, 10_000, n)).astype(float)  # repeated timestamps, uneven gaps
    y = rng.integers(-5, 5, n).astype(float)  # many ties
    if seed % 3 == 0:
        y[rng.random(n) < 0.1] = np.nan
    buckets = int(rng.integers(1, 200))
    assert minmax_indices(x, y, buckets).tolist() == reference(x, y, buckets)


def test_a_spike_survives_and_the_output_is_bounded():
    x = np.arange(1_000_000, dtype=float)
    y = np.zeros_like(x)
    y[123_457] = 99.0
    kept = minmax_indices(x, y, 500)
    assert len(kept) <= 1002 and 123_457 in kept and kept[0] == 0 and kept[-1] == len(x) - 1


def test_small_inputs_and_bad_arguments():
    assert minmax_indices([1, 2, 3], [3, 2, 1], 1).tolist() == [0, 1, 2]
    assert minmax_indices([], [], 10).tolist() == []
    assert minmax_indices(np.arange(10.0), np.full(10, np.nan), 2).tolist() == []
    with pytest.raises(ValueError, match="buckets=0: expected an int >= 1"):
        minmax_indices([1], [1], 0)
    with pytest.raises(ValueError, match="shapes"):
        minmax_indices([1, 2], [1], 3)
