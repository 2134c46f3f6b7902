"""The soak's report: ``soak.svg`` (hand-written SVG, one panel per
metric, a line per node, the faults marked) and ``summary.md``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .verdict import series, trend

if TYPE_CHECKING:
    from .run import SoakConfig, SoakResult

__all__ = ["write_svg", "write_summary", "PANELS"]

#: (column prefix, title, unit, divisor); per-node columns end in _<id>.
PANELS = (("rss_kb", "RSS", "MiB", 1024.0),
          ("fds", "open file descriptors", "count", 1.0),
          ("dir_bytes", "data dir size", "MiB", 2.0**20))
NODE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b")
FAULT_COLORS = {"kill-follower": "#ff7f0e", "kill-leader": "#d62728", "pause": "#7f7f7f",
                "transfer": "#17becf"}

W, PANEL_H, LEFT, RIGHT, TOP, GAP = 760, 150, 70, 20, 40, 55


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Round ticks (1, 2 or 5 x 10^k apart) covering [lo, hi], about ``n`` of them."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.1f}"


def write_svg(path: Path, rows: Sequence[dict[str, Any]], ids: Sequence[int],
              faults: Sequence[dict[str, Any]], duration: float) -> None:
    panels: list[tuple[str, str, list[tuple[str, str, list[tuple[float, float]]]]]] = []
    for column, title, unit, div in PANELS:
        lines = [(f"node {i}", NODE_COLORS[k % len(NODE_COLORS)],
                  [(t, v / div) for t, v in series(rows, i, column)])
                 for k, i in enumerate(ids)]
        panels.append((title, unit, lines))
    panels.append(("cluster throughput", "per s",
                   [("ops/s", "#1f77b4", _cluster(rows, "ops_s")),
                    ("errors/s", "#d62728", _cluster(rows, "errors_s"))]))
    height = TOP + len(panels) * (PANEL_H + GAP) + 30
    x_max = max([duration] + [float(r["t"]) for r in rows]) or 1.0
    minutes = x_max >= 300
    plot_w = W - LEFT - RIGHT
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
           f'viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{height}" fill="white"/>',
           f'<text x="{LEFT}" y="18" font-size="14">canonical-raft soak: 3 nodes, '
           f'{x_max / 60:.1f} min, {len(faults)} faults</text>']
    # legend: fault kinds
    x = LEFT
    for kind, color in FAULT_COLORS.items():
        out.append(f'<line x1="{x}" y1="30" x2="{x + 14}" y2="30" stroke="{color}" '
                   f'stroke-width="2" stroke-dasharray="3,2"/>'
                   f'<text x="{x + 18}" y="34">{escape(kind)}</text>')
        x += 110
    for n, (title, unit, lines) in enumerate(panels):
        y0 = TOP + n * (PANEL_H + GAP) + 15
        values = [v for _, _, pts in lines for _, v in pts]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        lo = 0.0 if lo >= 0 else lo
        hi = hi * 1.05 if hi > lo else lo + 1.0

        def sx(t: float) -> float:
            return LEFT + plot_w * t / x_max

        def sy(v: float, lo: float = lo, hi: float = hi, y0: float = y0) -> float:
            return y0 + PANEL_H - PANEL_H * (v - lo) / (hi - lo)

        out.append(f'<text x="{LEFT}" y="{y0 - 5}" font-size="12" font-weight="bold">'
                   f'{escape(title)} ({escape(unit)})</text>')
        out.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" '
                   f'fill="none" stroke="#333"/>')
        for v in _ticks(lo, hi):
            y = sy(v)
            out.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{LEFT}" y2="{y:.1f}" '
                       f'stroke="#333"/><text x="{LEFT - 6}" y="{y + 4:.1f}" '
                       f'text-anchor="end">{_fmt(v)}</text>')
        out.append(f'<text transform="translate(14,{y0 + PANEL_H / 2:.0f}) rotate(-90)" '
                   f'text-anchor="middle">{escape(unit)}</text>')
        scale = 60.0 if minutes else 1.0
        for tick in _ticks(0.0, x_max / scale, 6):
            x_ = sx(tick * scale)
            label = _fmt(tick)
            out.append(f'<line x1="{x_:.1f}" y1="{y0 + PANEL_H}" x2="{x_:.1f}" '
                       f'y2="{y0 + PANEL_H + 4}" stroke="#333"/><text x="{x_:.1f}" '
                       f'y="{y0 + PANEL_H + 15}" text-anchor="middle">{label}</text>')
        out.append(f'<text x="{LEFT + plot_w / 2}" y="{y0 + PANEL_H + 28}" '
                   f'text-anchor="middle">time ({"min" if minutes else "s"})</text>')
        for f in faults:
            x_ = sx(float(f["t"]))
            color = FAULT_COLORS.get(str(f["kind"]), "#999")
            out.append(f'<line x1="{x_:.1f}" y1="{y0}" x2="{x_:.1f}" y2="{y0 + PANEL_H}" '
                       f'stroke="{color}" stroke-dasharray="3,2" stroke-opacity="0.7">'
                       f'<title>{escape(str(f["kind"]))} node {f.get("node")} at '
                       f'{float(f["t"]):.0f}s</title></line>')
        for k, (label, color, pts) in enumerate(lines):
            # a gap (node down) breaks the line
            d: list[str] = []
            prev = None
            step = 3.0 * _median_step(rows)
            for t, v in pts:
                cmd = "M" if prev is None or t - prev > step else "L"
                d.append(f"{cmd}{sx(t):.1f},{sy(v):.1f}")
                prev = t
            if d:
                out.append(f'<path d="{" ".join(d)}" fill="none" stroke="{color}" '
                           f'stroke-width="1.3"/>')
            lx = LEFT + plot_w - 80 * (len(lines) - k)
            out.append(f'<line x1="{lx}" y1="{y0 - 9}" x2="{lx + 14}" y2="{y0 - 9}" '
                       f'stroke="{color}" stroke-width="2"/><text x="{lx + 18}" '
                       f'y="{y0 - 5}">{escape(label)}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def _cluster(rows: Sequence[dict[str, Any]], column: str) -> list[tuple[float, float]]:
    return [(float(r["t"]), float(r[column])) for r in rows if r.get(column) not in (None, "")]


def _median_step(rows: Sequence[dict[str, Any]]) -> float:
    ts = [float(r["t"]) for r in rows]
    steps = sorted(b - a for a, b in zip(ts, ts[1:]) if b > a)
    return steps[len(steps) // 2] if steps else 1.0


def _mib(v: float) -> str:
    return f"{v / 2**20:.1f}"


def write_summary(path: Path, result: SoakResult, rows: Sequence[dict[str, Any]],
                  ids: Sequence[int], cfg: SoakConfig) -> None:
    ops = sum(result.ops.values())
    errors = sum(result.errors.values())
    lines = [f"# Soak: {'PASS' if result.ok else 'FAIL'}", "",
             f"3 nodes (uv engine), {cfg.minutes:g} min of load at {cfg.rate:g} ops/s from "
             f"{cfg.clients} clients over {cfg.clients * cfg.keys + cfg.counters} keys "
             f"({cfg.value_bytes}-byte values), snapshot threshold {cfg.snapshot_threshold} / "
             f"trailing {cfg.snapshot_trailing}, a fault every {cfg.fault_every:g} s, a sample "
             f"every {cfg.sample_every:g} s; {result.seconds:g} s in all, seed {cfg.seed}.", "",
             f"- operations acknowledged: {ops} ({_kinds(result.ops)}); "
             f"{ops / max(cfg.seconds, 1e-9):.0f}/s on average",
             f"- client errors: {errors} ({_kinds(result.errors) or 'none'})",
             f"- faults: {len(result.fault_events)} ({_kinds(result.faults) or 'none'}); "
             f"failed: {sum(not e['ok'] for e in result.fault_events)}",
             f"- snapshots taken (all node processes): {result.snapshots}",
             f"- new leader after a leader fault: {_leader_times(result.fault_events)}", "",
             "## Resources per node", "",
             "| node | metric | start | end | max |", "|---|---|---|---|---|"]
    units = {"rss_kb": ("RSS (MiB)", 1024.0), "fds": ("open fds", 1.0),
             "dir_bytes": ("data dir (MiB)", 2.0**20)}
    for i in ids:
        for metric, (label, div) in units.items():
            pts = series(rows, i, metric)
            if not pts:
                continue
            lines.append(f"| {i} | {label} | {_in(pts[0][1], div)} | {_in(pts[-1][1], div)} | "
                         f"{_in(max(v for _, v in pts), div)} |")
    tol = cfg.tolerances_()
    slopes = []
    for i in ids:
        found = trend(rows, i, "rss_kb", tol.settle_s)
        if found is not None and found[1] >= 600:   # shorter: noise and warm-up
            slopes.append(f"node {i} {found[0] / 1024:+.2f} MiB/h over {found[1] / 60:.0f} min")
    if slopes:
        lines += ["", "RSS trend (informational: least-squares slope over each node's longest "
                  "stretch without a restart, once settled, if 10 min or more): "
                  + "; ".join(slopes) + "."]
    lines += ["", "## Flatness verdict", "",
              "Median of the last quarter against the median of the second quarter; RSS and "
              f"fds only on processes at least {tol.settle_s:g} s old (docs/soak.md). Limits: "
              f"RSS x{1 + tol.rss_growth:g} + {tol.rss_slack_kb // 1024} MiB, fds "
              f"+{tol.fds_slack}, data dir x{1 + tol.dir_growth:g} + "
              f"{_mib(tol.dir_slack_bytes)} MiB and never above "
              f"{_mib(tol.dir_cap_bytes or 0)} MiB.", "",
              "| node | metric | 2nd quarter | last quarter | limit | samples | verdict |",
              "|---|---|---|---|---|---|---|"]
    for c in result.checks:
        label, div = units[c.metric]
        if c.early is None or c.late is None or c.limit is None:
            lines.append(f"| {c.node} | {label} | | | | {c.samples[0]}/{c.samples[1]} | "
                         f"n/a ({c.note}) |")
            continue
        lines.append(f"| {c.node} | {label} | {_in(c.early, div)} | {_in(c.late, div)} | "
                     f"{_in(c.limit, div)} "
                     f"| {c.samples[0]}/{c.samples[1]} | {'flat' if c.ok else 'GROWS'}"
                     f"{' (' + c.note + ')' if c.note else ''} |")
    lines += ["", "## Correctness", "",
              "Every replica's final dict equal, every key's final value one that was "
              "written to it (its last acknowledged write, or an indeterminate one since), "
              "every counter within [acknowledged, acknowledged + indeterminate] incrs: "
              + ("yes." if not result.problems else "see the problems."), ""]
    if result.problems:
        lines += ["## Problems", ""] + [f"- {p}" for p in result.problems[:50]] + [""]
    lines += ["## Faults", "", "| t (s) | kind | node | new leader (s) | ok | detail |",
              "|---|---|---|---|---|---|"]
    for e in result.fault_events:
        nl = "" if e.get("new_leader_s") is None else f"{e['new_leader_s']:.2f}"
        lines.append(f"| {e['t']:.0f} | {e['kind']} | {e.get('node')} | {nl} | "
                     f"{'yes' if e['ok'] else 'NO'} | {e.get('detail', '')} |")
    path.write_text("\n".join(lines) + "\n")


def _in(value: float, div: float) -> str:
    return f"{value / div:.1f}" if div != 1.0 else f"{value:.0f}"


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _leader_times(events: Sequence[dict[str, Any]]) -> str:
    times = sorted(float(e["new_leader_s"]) for e in events
                   if e.get("new_leader_s") is not None and e["kind"] != "transfer")
    if not times:
        return "n/a"
    return (f"median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s "
            f"over {len(times)}")
