"""bench/host.py: the host-load line every bench with a target prints beside its figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_host", Path(__file__).resolve().parents[1] / "bench" / "host.py")
assert _spec is not None and _spec.loader is not None
host = importlib.util.module_from_spec(_spec)
sys.modules["bench_host"] = host  # dataclasses look their module up there
_spec.loader.exec_module(host)

STAT_A = "cpu  1000 10 300 5000 40 0 50 100 0 0\ncpu0 500 5 150 2500 20 0 25 50 0 0\nintr 1 2 3\n"
STAT_B = "cpu  1400 10 400 5300 40 0 50 300 0 0\ncpu0 700 5 200 2650 20 0 25 150 0 0\nintr 4 5 6\n"


def test_the_all_cpu_line_is_read_and_its_fields_summed() -> None:
    sample = host.parse_stat(STAT_A)
    assert sample == host.Sample(busy=1000 + 10 + 300 + 0 + 50, steal=100, total=1360 + 5000 + 40 + 100)


def test_a_kernel_that_reports_fewer_fields_counts_the_missing_ones_as_zero() -> None:
    assert host.parse_stat("cpu 1 2 3 4\n") == host.Sample(busy=6, steal=0, total=10)


def test_text_without_the_all_cpu_line_is_refused() -> None:
    with pytest.raises(ValueError, match="no 'cpu' line"):
        host.parse_stat("cpu0 1 2 3 4\n")


def test_steal_and_other_processes_are_measured_between_two_samples() -> None:
    a, b = host.parse_stat(STAT_A), host.parse_stat(STAT_B)
    # 500 busy jiffies at 100 Hz = 5 CPU-s, of which the bench used 3 in 10 s: 0.2 cores elsewhere.
    load = host.load_between(a, b, own_seconds=3.0, wall=10.0, hz=100)
    assert load.steal == pytest.approx(200 / (500 + 300 + 200))
    assert load.other_cores == pytest.approx(0.2)
    assert not load.quiet
    assert "NOT QUIET" in load.describe() and "steal 20.0 %" in load.describe()


def test_a_host_with_nothing_else_running_is_called_quiet() -> None:
    a = host.Sample(busy=0, steal=0, total=0)
    b = host.Sample(busy=300, steal=1, total=1000)
    load = host.load_between(a, b, own_seconds=3.0, wall=10.0, hz=100)
    assert load == host.Load(steal=0.001, other_cores=0.0)
    assert load.quiet and load.describe().endswith("(quiet)")


def test_the_bench_using_more_than_the_counters_saw_is_not_a_negative_load() -> None:
    """getrusage and /proc/stat tick differently: the bench's own CPU can exceed the busy jiffies."""
    a, b = host.Sample(0, 0, 0), host.Sample(busy=100, steal=0, total=200)
    assert host.load_between(a, b, own_seconds=1.2, wall=1.0, hz=100).other_cores == 0.0


def test_the_watch_reads_this_machines_counters() -> None:
    watch = host.HostWatch()
    line = watch.describe()
    if not host.STAT.exists():
        assert line.endswith("load unknown (no /proc/stat)")
    else:
        load = watch.load()
        assert load is not None and 0.0 <= load.steal <= 1.0 and load.other_cores >= 0.0
        assert line.startswith("host while measuring: steal ")
