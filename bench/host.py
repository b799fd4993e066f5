"""What else the host did while a bench measured: CPU the hypervisor stole, and CPU busy
outside the bench's own processes.

On this shared 2-core VM the same fixed work drifts by 10-50 % within minutes (a clean
dataprep run at 960 frames went from 7.2 s to 10.4 s in twenty minutes, with the
machine otherwise idle). A ratio measured across such a shift says little, so every
bench with a target prints this line beside its figures:

    host while measuring: steal 0.4 % of CPU time, 0.03 cores busy outside this bench (quiet)

From Linux's /proc/stat (jiffies of user, nice, system, idle, iowait, irq, softirq,
steal) and getrusage of this process and its waited-for children. Elsewhere the line
says the load is unknown.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

STAT = Path("/proc/stat")
QUIET_STEAL = 0.02
"""Above 2 % of CPU time stolen, a ratio is flagged. A chosen threshold, not a derived one:
steal was 0.4 to 2.5 % in the bench rounds of 2026-12-03, and those rounds alone do not
show how far a figure follows it."""
QUIET_OTHER_CORES = 0.10
"""Above a tenth of a core busy in other processes, likewise."""


@dataclass(frozen=True)
class Sample:
    busy: int
    """Jiffies of user, nice, system, irq and softirq over all CPUs (guest time is inside user)."""
    steal: int
    total: int
    """busy + idle + iowait + steal."""


def parse_stat(text: str) -> Sample:
    """The all-CPU line of /proc/stat. ValueError when `text` has none."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:9]]
            values += [0] * (8 - len(values))  # an old kernel reports fewer fields
            user, nice, system, idle, iowait, irq, softirq, steal = values
            busy = user + nice + system + irq + softirq
            return Sample(busy, steal, busy + idle + iowait + steal)
    raise ValueError("no 'cpu' line in /proc/stat")


def own_cpu() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass(frozen=True)
class Load:
    steal: float
    """Fraction of all CPU time the hypervisor gave to someone else."""
    other_cores: float
    """Cores busy, on average, in processes that are not this bench or its children."""

    @property
    def quiet(self) -> bool:
        return self.steal <= QUIET_STEAL and self.other_cores <= QUIET_OTHER_CORES

    def describe(self) -> str:
        verdict = "quiet" if self.quiet else "NOT QUIET: compare these figures with care"
        return f"steal {100 * self.steal:.1f} % of CPU time, {self.other_cores:.2f} cores busy outside this bench ({verdict})"


def load_between(start: Sample, end: Sample, own_seconds: float, wall: float, hz: int) -> Load:
    """The load between two samples, given the CPU seconds the bench itself used and the wall time."""
    total = end.total - start.total
    steal = (end.steal - start.steal) / total if total > 0 else 0.0
    other = max(0.0, (end.busy - start.busy) / hz - own_seconds) / wall if wall > 0 else 0.0
    return Load(steal, other)


class HostWatch:
    """Started before a measurement; `load()` after it says how busy the host was meanwhile."""

    def __init__(self) -> None:
        self._sample = _read()
        self._cpu = own_cpu()
        self._started = time.perf_counter()

    def load(self) -> Load | None:
        """None where /proc/stat cannot be read."""
        end = _read()
        if self._sample is None or end is None:
            return None
        return load_between(
            self._sample, end, own_cpu() - self._cpu, time.perf_counter() - self._started, os.sysconf("SC_CLK_TCK")
        )

    def describe(self) -> str:
        load = self.load()
        return "host while measuring: " + ("load unknown (no /proc/stat)" if load is None else load.describe())


def _read() -> Sample | None:
    try:
        return parse_stat(STAT.read_text())
    except (OSError, ValueError):
        return None
