"""Charts of a bench_throughput.py run, drawn from its JSON with matplotlib (Agg, PNG).

* throughput.png: in-memory msgs/s by consumer count, one bar per contender (median,
  min-max whiskers), no-op and CPU consumers side by side, log scale;
* latency.png: publish-to-consumer percentiles per contender, low and high rate;
* async.png: sync-to-async msgs/s by task count, janus against tinymq;
* durable.png: durable publish and get+ack rates per row, against the raw
  write+fdatasync loop (the limit of one sync per message) and the batched loop.

matplotlib is optional (the ``bench`` extra); without it ``unavailable()`` says so.

Redraw the charts of a saved run from the repository root::

    python benchmarks/bench_plot.py bench-results/full.json docs/img
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

COLOURS = {
    "queue.Queue": "#7f7f7f",
    "tinymq": "#d62728",
    "tinymq async": "#d62728",
    "ThreadPoolExecutor.submit": "#1f77b4",
    "janus sync-to-sync": "#2ca02c",
    "janus": "#2ca02c",
    "huey MemoryHuey": "#9467bd",
    "dramatiq StubBroker": "#ff7f0e",
}
DPI = 110


def unavailable() -> str | None:
    """Why charts cannot be drawn here, or None if they can."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return "skipped (matplotlib not installed: pip install -e '.[bench]')"
    return None


def _pyplot() -> ModuleType:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _thousands() -> Any:
    ticker = importlib.import_module("matplotlib.ticker")
    return ticker.FuncFormatter(lambda value, _pos: f"{value:,.0f}")


def _colour(name: str, index: int) -> str:
    return COLOURS.get(name, f"C{index}")


def _bars(
    ax: Any,
    groups: Sequence[str],
    series: dict[str, list[list[float]]],
    labels: dict[str, list[str]] | None = None,
) -> None:
    """Grouped bars: one group per label, one bar per series (median, min-max whiskers).

    ``labels`` gives, per series, a text to write above each of its bars.
    """
    width = 0.8 / max(1, len(series))
    for i, (name, per_group) in enumerate(series.items()):
        xs, mids, lows, highs, texts = [], [], [], [], []
        for g, values in enumerate(per_group):
            if not values:
                continue
            mid = statistics.median(values)
            xs.append(g - 0.4 + width * (i + 0.5))
            mids.append(mid)
            lows.append(mid - min(values))
            highs.append(max(values) - mid)
            texts.append(labels[name][g] if labels else "")
        ax.bar(xs, mids, width, label=name, color=_colour(name, i))
        if any(lows) or any(highs):
            ax.errorbar(xs, mids, yerr=[lows, highs], fmt="none", ecolor="black", lw=0.8, capsize=2)
        for x, top, text in zip(
            xs, (m + h for m, h in zip(mids, highs, strict=True)), texts, strict=True
        ):
            if text:
                ax.text(x, top * 1.04, text, ha="center", va="bottom", rotation=90, fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_axisbelow(True)


def _legend_below(fig: Any, ax: Any, columns: int) -> None:
    handles, names = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.03),
        ncol=columns,
        fontsize=8,
        frameon=False,
    )


def _footer(fig: Any, machine: dict[str, Any]) -> None:
    text = (
        f"{machine['cpu_count']} CPUs, {machine['python']}, {machine['time_utc'][:10]}; "
        "interleaved rounds of one run"
    )
    fig.text(0.99, 0.005, text, ha="right", va="bottom", fontsize=7, color="#555555")


def plot_throughput(data: dict[str, Any], path: Path) -> None:
    """In-memory msgs/s by consumer count, one panel per workload."""
    plt = _pyplot()
    workloads = data["throughput"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.6))
    for ax, (workload, cases) in zip(axes, workloads.items(), strict=True):
        names = list(cases[0]["msgs_per_s"])
        series = {n: [case["msgs_per_s"][n] for case in cases] for n in names}
        ratios = {
            n: [f"{case['ratio_to_baseline'].get(n, 1.0):.2f}x" for case in cases] for n in names
        }
        _bars(ax, [str(case["consumers"]) for case in cases], series, ratios)
        ax.set_yscale("log")
        ax.margins(y=0.25)
        ax.set_xlabel("consumer threads")
        ax.set_ylabel("messages per second (log)")
        ax.set_title(f"{workload} consumer, {cases[0]['messages']:,} messages per round")
    _legend_below(fig, axes[0], 6)
    fig.suptitle(
        "In-memory throughput, 1 publisher: median of the rounds, min-max whiskers, "
        "ratio to queue.Queue above each bar"
    )
    _footer(fig, data["machine"])
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_latency(data: dict[str, Any], path: Path) -> None:
    """Latency percentiles per contender, one panel per rate."""
    plt = _pyplot()
    rates = data["latency"]
    fig, axes = plt.subplots(1, len(rates), figsize=(6 * len(rates), 4.6))
    for ax, lat in zip(axes, rates, strict=True):
        pct = lat["percentiles_ns"]
        labels = ["p50", "p90", "p99", "p100"]
        series = {n: [[pct[n][p] / 1000] for p in labels] for n in pct}
        _bars(ax, ["p50", "p90", "p99", "max"], series)
        ax.set_yscale("log")
        ax.set_ylabel("microseconds (log)")
        ax.set_title(
            f"{lat['rate']} rate: ~{lat['nominal_msgs_per_s']:,.0f} msgs/s, "
            f"{lat['burst']} per {lat['tick_s'] * 1000:g} ms"
        )
    _legend_below(fig, axes[0], 6)
    fig.suptitle("Publish-to-consumer latency, 1 consumer, all rounds pooled (lower is better)")
    _footer(fig, data["machine"])
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_async(data: dict[str, Any], path: Path) -> None:
    """Sync-to-async msgs/s by task count."""
    plt = _pyplot()
    cases = data["async_throughput"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    names = list(cases[0]["msgs_per_s"])
    series = {n: [c["msgs_per_s"][n] for c in cases] for n in names}
    ratios = {n: [f"{c['ratio_to_baseline'].get(n, 1.0):.2f}x" for c in cases] for n in names}
    _bars(ax, [str(c["consumers"]) for c in cases], series, ratios)
    ax.margins(y=0.15)
    ax.yaxis.set_major_formatter(_thousands())
    ax.set_xlabel("asyncio consumer tasks")
    ax.set_ylabel("messages per second")
    ax.set_title(
        f"Sync publisher thread to async consumers, {cases[0]['messages']:,} messages\n"
        "ratio to janus above each bar",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    _footer(fig, data["machine"])
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_durable(data: dict[str, Any], path: Path) -> None:
    """Durable publish and get+ack rates per row, against the fdatasync limits."""
    plt = _pyplot()
    rows = {n: r for n, r in data["durable"]["rows"].items() if not r["skipped"]}
    names = list(rows)
    limits = [n for n in names if n.startswith("raw")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.42 * len(names) + 1.8), sharey=True, sharex=True)
    for ax, key, title in (
        (axes[0], "put_rates", "publish (put)"),
        (axes[1], "drain_rates", "get + ack"),
    ):
        ys, mids, colours = [], [], []
        errs: list[list[float]] = [[], []]
        for y, name in enumerate(names):
            values = rows[name][key]
            if not values:
                continue
            mid = statistics.median(values)
            ys.append(y)
            mids.append(mid)
            errs[0].append(mid - min(values))
            errs[1].append(max(values) - mid)
            colours.append(_durable_colour(name))
        ax.barh(ys, mids, xerr=errs, color=colours, error_kw={"lw": 0.8, "capsize": 2})
        for y, mid, high in zip(ys, mids, errs[1], strict=True):
            ax.text((mid + high) * 1.1, y, f"{mid:,.0f}", va="center", fontsize=7)
        if key == "put_rates":
            for limit, style in zip(limits, ("--", ":"), strict=False):
                value = statistics.median(rows[limit]["put_rates"])
                ax.axvline(value, color="black", ls=style, lw=0.9, label=f"{limit}: {value:,.0f}/s")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_thousands())
        ax.xaxis.set_minor_formatter(importlib.import_module("matplotlib.ticker").NullFormatter())
        ax.margins(x=0.15)
        ax.set_xlabel("messages per second (log)")
        ax.set_title(title)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=7, loc="lower right")
    disk = data["machine"]["disk"]
    sync = data["machine"]["sync_latency_us"]["fdatasync"]
    fig.suptitle(
        f"Durable queues, 200-byte records: {disk['fstype']} on {disk['device']}, "
        f"fdatasync p50 {sync['p50']:,.0f} us"
    )
    _footer(fig, data["machine"])
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _durable_colour(name: str) -> str:
    if name.startswith("raw"):
        return "#7f7f7f"
    if name.startswith("tinymq"):
        return COLOURS["tinymq"]
    return "#1f77b4"


def plot_all(data: dict[str, Any], directory: Path) -> list[Path]:
    """Draw every chart of the run ``data`` (bench_throughput's JSON) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    charts = {
        "throughput.png": plot_throughput,
        "latency.png": plot_latency,
        "async.png": plot_async,
        "durable.png": plot_durable,
    }
    written = []
    for name, draw in charts.items():
        path = directory / name
        draw(data, path)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Redraw the charts of a saved run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("json", type=Path, help="the --json file of a bench_throughput.py run")
    parser.add_argument("directory", type=Path, help="where to write the PNG files")
    args = parser.parse_args(argv)
    why = unavailable()
    if why is not None:
        print(f"charts {why}", file=sys.stderr)
        return 1
    for path in plot_all(json.loads(args.json.read_text()), args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
