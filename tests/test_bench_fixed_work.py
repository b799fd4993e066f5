"""bench/bench_fixed_work.py: the run order of its rounds (the part of a bench that decides
what its ratios can mean; the timings themselves are only printed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from hypothesis import given
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fixed_work", BENCH / "bench_fixed_work.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))  # it imports host.py as a script beside it does
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


fixed_work = _load()
MODES = st.lists(st.sampled_from(["plain", "off", "on", "savez", "on-nofsync"]), min_size=2, max_size=5, unique=True)


@given(MODES, st.integers(0, 50))
def test_a_plain_round_runs_every_mode_once_and_rotates_who_goes_first(modes: list[str], r: int) -> None:
    order = fixed_work.round_order(modes, r, False)
    assert sorted(order) == sorted(modes)
    assert order[0] == modes[r % len(modes)]


@given(MODES, st.integers(0, 50), st.floats(-0.05, 0.05), st.floats(0.5, 2.0))
def test_a_palindromic_round_cancels_a_steady_drift(modes: list[str], r: int, slope: float, cost: float) -> None:
    """Every mode runs twice, and a drift linear in time (each run `slope` slower than the one
    before) leaves the ratio of two modes' sums at their true ratio."""
    order = fixed_work.round_order(modes, r, True)
    assert all(order.count(m) == 2 for m in modes)
    true = {m: (cost if m == modes[0] else 1.0) for m in modes}
    seconds = {m: 0.0 for m in modes}
    for t, mode in enumerate(order):
        seconds[mode] += true[mode] * (1 + slope * t)
    a, b = modes[0], modes[1]
    assert abs(seconds[a] / seconds[b] - cost) < 1e-9


def test_without_the_palindrome_the_same_drift_shows_in_the_ratio() -> None:
    """The check above can fail: one pass in one order is biased by the drift."""
    order = fixed_work.round_order(["off", "on"], 0, False)
    seconds = {m: 1.0 * (1 + 0.05 * t) for t, m in enumerate(order)}
    assert seconds["on"] / seconds["off"] > 1.04
