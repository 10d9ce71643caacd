"""Verdicts that can fail, and the two ways a benchmark can: a goal missed, or the bench broken.

* **A goal missed**: every run succeeded and every figure exists, the figure is on the wrong
  side of its goal. The goal's line says FAIL; the benchmark still did its job (exit 0).
* **The benchmark broke**: a run failed, a stream was invalid or incomplete, or a figure a goal
  needs is missing. Every goal line resting on it says FAIL (never PASS, never a silent
  "n/a"), the report ends with ``BROKEN:`` lines saying why, and the process exits
  :data:`EXIT_BROKEN`. ``python -m bench`` exits non-zero if any benchmark broke.

A **smoke run** (``--smoke``: tiny sizes, one repetition) checks that a benchmark works, not how
fast: its goal lines say :data:`SMOKE` instead of PASS or FAIL, unless it broke (FAIL).
``tests/bench/test_smoke.py`` runs every benchmark this way in ``make test``.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Iterable

EXIT_BROKEN = 1
SMOKE = "not evaluated (smoke)"
MISSING = "n/a"


def verdict(met: bool | None, *, broken: bool = False, smoke: bool = False) -> str:
    """PASS only if nothing the goal rests on broke, its figure exists (``met`` is not None)
    and it met the goal; FAIL otherwise. A smoke run evaluates no goal."""
    if broken or met is None:
        return "FAIL"
    if smoke:
        return SMOKE
    return "PASS" if met else "FAIL"


def missing(value: float | None) -> bool:
    """A figure that was not measured (None) or cannot mean anything (NaN, infinite)."""
    return value is None or not math.isfinite(value)


def figure(value: float | None, spec: str, suffix: str = "") -> str:
    """``value`` formatted with ``spec``, or :data:`MISSING`."""
    return MISSING if missing(value) else f"{value:{spec}}{suffix}"


def quotient(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None if either is missing or the denominator is 0."""
    if missing(numerator) or missing(denominator) or not denominator:
        return None
    return numerator / denominator  # type: ignore[operator]


def p50(values: list[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def p95(values: list[float]) -> float | None:
    """Nearest rank (of 12 values, the largest; of 20, the 19th), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def broken_lines(problems: Iterable[str]) -> list[str]:
    return [f"BROKEN: {problem}" for problem in problems]


def finish(report: str, problems: list[str]) -> None:
    """Print a benchmark's report and why it broke, if it did; exit :data:`EXIT_BROKEN` then."""
    print("\n".join([report, *broken_lines(problems)]), flush=True)
    if problems:
        sys.exit(EXIT_BROKEN)
