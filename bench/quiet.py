"""Was the machine quiet? The CPU other processes used while a benchmark ran: figures taken
on a busy machine are skewed, and the report says so."""

from __future__ import annotations

import os
import resource


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds all processes used, CPU seconds this one and its children used) so far.

    Their difference over a run is what other work took: figures from a busy machine are off.
    """
    try:
        with open("/proc/stat") as stat:
            jiffies = [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = (sum(jiffies[:8]) - jiffies[3] - jiffies[4]) / tick  # all but idle and iowait
    ours = sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )
    return busy, ours


def other_load(before: tuple[float, float] | None, seconds: float) -> str:
    """Average number of CPUs other processes kept busy since ``before``."""
    after = cpu_seconds()
    if before is None or after is None:
        return "unknown"
    others = max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / seconds
    verdict = " (NOT QUIET: the figures are skewed)" if others > 0.15 else ""
    return f"{others:.2f} CPUs{verdict}"
