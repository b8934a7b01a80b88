"""The report: the table printed on stdout from the run's JSON report."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def table(report: dict[str, Any]) -> str:
    lines = []
    for sc in report["scenarios"]:
        name = sc["name"]
        rows = [(t, t_res["scenarios"].get(name)) for t, t_res in report["targets"].items()]
        base = {k: (r or {}) for k, r in rows}
        env_r, floor_r = base.get("envoy", {}), base.get("floor", {})
        stream = sc["stream"]
        lines.append("")
        lines.append(f"== {name}: {sc['what']}")
        head = (f"{'target':<10} {'req/s':>9} {'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9}")
        if stream:
            head += f" {'ttfb50':>8} {'ttfb99':>8}"
        head += (f" {'err':>5} {'cpu µs/rq':>9} {'RSS MB':>7} {'other':>5} | {'rps/env':>7} {'rps/flr':>7}"
                 f" {'p50-env':>8} {'p99/env':>7} {'p50/flr':>7}")
        lines.append(head)
        for tname, r in rows:
            status = report["targets"][tname]["status"]
            if r is None:
                why = report["targets"][tname].get("scenario_errors", {}).get(name)
                lines.append(f"{tname:<10} {'failed: ' + why[:150] if why else status}")
                continue
            lat = r.get("latency_us") or {}
            row = (f"{tname:<10} {fmt(r['rps']):>9} {fmt(lat.get('p50'), 1):>9} "
                   f"{fmt(lat.get('p90'), 1):>9} {fmt(lat.get('p99'), 1):>9}")
            if stream:
                tt = r.get("ttfb_us") or {}
                row += f" {fmt(tt.get('p50'), 0):>8} {fmt(tt.get('p99'), 0):>8}"
            env_lat = env_r.get("latency_us") or {}
            floor_lat = floor_r.get("latency_us") or {}
            over = (f"{lat['p50'] - env_lat['p50']:+.1f}" if lat.get("p50") and env_lat.get("p50")
                    else "-")
            sat = "*" if r.get("saturated") else ""
            row += (f" {fmt(r['errors']):>5} {fmt(r.get('cpu_us_per_req'), 1):>9}"
                    f" {fmt(r.get('rss_mb'), 0):>7} {fmt(r.get('other_cpu_load'), 2):>5}"
                    f" | {ratio(r['rps'], env_r.get('rps')):>7}"
                    f" {ratio(r['rps'], floor_r.get('rps')):>7} {over:>8}"
                    f" {ratio(lat.get('p99'), env_lat.get('p99')):>7}"
                    f" {ratio(lat.get('p50'), floor_lat.get('p50')):>7}{sat}")
            side = r.get("side_cpu_us_per_req") or {}
            if side:
                row += "  (" + ", ".join(f"{k}: {v} cpu µs/rq, {r['side_rss_mb'].get(k)} MB"
                                         for k, v in side.items()) + ")"
            lines.append(row)
    failed = [(t, r) for t, r in report["targets"].items() if r["status"] != "ok"]
    if failed:
        lines.append("")
        for t, r in failed:
            lines.append(f"{t}: {r['status']}: {r.get('error', '')[:400]}")
    lines.append("")
    lines.append("floor's CPU and RSS are the mock's own. `*`: the target could not keep the "
                 "requested rate (saturated). other: CPUs busy with work not ours during the "
                 "window (other builds or tests); above ~0.1 the figures of that row are noisy.")
    noisy = sorted({f"{t}/{n}" for t, r in report["targets"].items()
                    for n, x in r["scenarios"].items() if (x.get("other_cpu_load") or 0) > 0.1})
    if noisy:
        lines.append("WARNING: the machine was busy with other work during: " + ", ".join(noisy))
    return "\n".join(lines)
