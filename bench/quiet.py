"""Was the machine quiet? The CPU other processes used while a benchmark ran: figures taken
on a busy machine are skewed, and the report says so."""

from __future__ import annotations

import contextlib
import os
import resource

import psutil


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


def descendants_cpu() -> float:
    """CPU seconds of this process's live descendants, with what they reaped: work of ours
    that ``cpu_seconds`` does not count yet (the kernel adds a child's time to ours only when
    we reap it), such as a browser's processes, which we never reap."""
    total = 0.0
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # ended meanwhile
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def other_load(before: tuple[float, float] | None, seconds: float, live: float = 0.0) -> str:
    """Average number of CPUs other processes kept busy since ``before``; ``live``: CPU seconds
    our still-running descendants used meanwhile (:func:`descendants_cpu`)."""
    after = cpu_seconds()
    if before is None or after is None:
        return "unknown"
    others = max(0.0, (after[0] - before[0]) - (after[1] - before[1]) - live) / seconds
    verdict = " (NOT QUIET: the figures are skewed)" if others > 0.15 else ""
    return f"{others:.2f} CPUs{verdict}"
