"""``benchmarks/query.py``'s target ratio and its bootstrap interval (pure logic, no servers)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def query(benchmark_script):
    return benchmark_script("query")


def test_target_ratio_is_gateway_median_over_the_budget(query):
    # medians 23, 10, 10 -> 23 / (1.3 * 10 + 10) = 1.0
    gw, raw, enc = np.array([22.0, 23.0, 40.0]), np.array([9.0, 10.0, 11.0]), np.array([10.0] * 3)
    assert query.target_ratio(gw, raw, enc) == pytest.approx(1.0)
    assert query.target_ratio(gw / 2, raw, enc) == pytest.approx(0.5)


def test_interval_is_a_point_when_every_query_took_the_same(query):
    lo, hi = query.ratio_interval([23.0] * 50, [10.0] * 50, [10.0] * 50)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


def test_interval_holds_the_ratio_and_narrows_with_more_queries(query):
    rng = np.random.default_rng(0)

    def width(n: int) -> tuple[float, float, float]:
        g, r, e = rng.normal(22, 3, n), rng.normal(10, 1.5, n), rng.normal(10, 1.5, n)
        lo, hi = query.ratio_interval(list(g), list(r), list(e))
        assert lo <= query.target_ratio(g, r, e) <= hi
        return hi - lo

    assert width(2000) < width(50)


def test_interval_rejects_unpaired_times(query):
    with pytest.raises(ValueError, match="one time per query"):
        query.ratio_interval([1.0, 2.0], [1.0], [1.0, 2.0])
