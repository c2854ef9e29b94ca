"""Plain-text report helpers of bench_throughput.py: progress, aligned tables, ranges, targets."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Verdict:
    """One target and how the run did against it."""

    name: str
    measured: float
    unit: str  # "x" for a ratio, " B" for bytes
    target: str
    ok: bool

    @property
    def word(self) -> str:
        """PASS or MISS."""
        return "PASS" if self.ok else "MISS"

    def row(self) -> list[str]:
        """Cells for the targets table: name, measured, goal, result."""
        return [self.name, f"{self.measured:.2f}{self.unit}", self.target, self.word]


def at_least(name: str, measured: float, target: float) -> Verdict:
    """A ratio that must be ``target`` or more."""
    return Verdict(name, measured, "x", f">= {target:g}x", measured >= target)


def at_most(name: str, measured: float, target: float, unit: str = "x") -> Verdict:
    """A figure that must be ``target`` or less."""
    return Verdict(name, measured, unit, f"<= {target:g}{unit}", measured <= target)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Align ``rows`` under ``headers``: the first ``left`` columns left, the others right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        aligned = (
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(aligned).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def spread(values: Sequence[float], fmt: str) -> str:
    """Median [min-max], or the one value of a single round."""
    low, mid, high = min(values), statistics.median(values), max(values)
    if len(values) == 1:
        return f"{mid:{fmt}}"
    return f"{mid:{fmt}} [{low:{fmt}}-{high:{fmt}}]"


_STARTED = time.monotonic()


def progress(text: str) -> None:
    """Report progress on stderr, with the seconds since the run began."""
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {text}", file=sys.stderr, flush=True)
