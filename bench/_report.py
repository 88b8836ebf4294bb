"""Present a run: the table printed to the terminal and the PNG of latency distributions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot", "table"]

_SERIES = {
    "floor_a": "floor (a): bare function",
    "floor_b": "floor (b): raw transaction",
    "floor_a_plus_b_paired": "floor (a) + (b), same round",
    "first_fresh": "first delivery, fresh event",
    "first_old": "first delivery, 1 h old event",
    "duplicate_fresh": "duplicate, fresh event",
    "duplicate_old": "duplicate, 1 h old event",
}


def _row(label: str, stats: dict[str, Any], unit: str = "ms") -> str:
    if not stats.get("n"):
        return f"  {label:<40} (no samples)"
    return (
        f"  {label:<40} {stats['p50']:>9.2f} {stats['p90']:>9.2f} {stats['p99']:>9.2f}"
        f" {stats['max']:>9.2f}  {unit}  (n={stats['n']})"
    )


def table(results: dict[str, Any]) -> str:
    """The run as text: floors and ours side by side, RPCs, load, then every target."""
    meta, latency = results["meta"], results["latency_ms"]
    config = meta["config"]
    lines = [
        f"Benchmark: {config['events']} events, {meta['cpus']} CPUs, Python {meta['python']}, "
        f"{meta['duration_s']} s",
        "",
        f"  {'latency (client side)':<40} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}",
    ]
    lines += [_row(label, latency[key]) for key, label in _SERIES.items()]
    cold = results["cold_start_s"]
    lines += [
        "",
        f"  {'cold start, spawn to first 200':<40} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}",
        _row("floor (a): bare function", cold["floor_a"], "s"),
        _row("floor (c): bare + stripe + firestore", cold["floor_c"], "s"),
        _row("ours: first delivery of a new instance", cold["ours"], "s"),
        f"  ours / floor (c) within each round, median: {results['cold_start_paired_ratio_p50']}",
        "  of which after gunicorn listened (worker boot + first request), p50: "
        + ", ".join(
            f"{kind} {stats['p50']:.0f} ms"
            for kind, stats in results["cold_start_first_request_ms"].items()
        ),
        "",
        "  Firestore RPCs per delivery (counted on the wire)",
    ]
    for kind, counts in results["rpcs"].items():
        calls = ", ".join(f"{name} {n}" for name, n in sorted(counts["calls"].items()))
        lines.append(f"    {kind:<28} median {counts['median']:<4} max {counts['max']:<4} {calls}")
    throughput, contention = results["throughput"], results["contention"]
    memory = results["memory_mib"]
    lines += [
        "",
        f"  throughput at concurrency {throughput['concurrency']} (/s): ours "
        f"{throughput['ours_per_s']}, raw transactions {throughput['raw_transactions_per_s']}"
        f" (ratios {throughput['ratios']}), floor (a) {throughput['floor_a_per_s']}",
        f"    CPU ms per operation: {throughput['cpu_ms_per_operation']}",
        _row("ours under that load", throughput["ours_latency_ms"]),
        f"  contention: {contention['events']} events x {contention['copies']} deliveries at "
        f"once, {contention['repeats']} times: {contention['statuses']}",
        _row("contention latency", contention["latency_ms"]),
        f"    effects applied (count: events) {contention['effects_applied']}, "
        f"unsettled {contention['unsettled_after_redelivery']}",
        f"  one object, {results['hot_object']['events_per_object']} distinct events at once, "
        f"{results['hot_object']['repeats']} times: {results['hot_object']['statuses']}",
        _row("hot object latency", results["hot_object"]["latency_ms"]),
        f"    unsettled {results['hot_object']['unsettled_after_redelivery']}, objects holding "
        f"the newest state {results['hot_object']['objects_holding_newest_state']}",
        f"  memory of arbiter + worker (MiB): {memory}",
    ]
    if results.get("cold_start_answers_before_200"):
        lines.append(f"  answers before a first 200: {results['cold_start_answers_before_200']}")
    if results.get("unexpected_answers"):
        lines.append(f"  UNEXPECTED ANSWERS: {results['unexpected_answers']}")
    lines += ["", f"  {'target':<42} {'measured':>10} {'limit':>10}  {'unit':<7} {'rule':<28}"]
    for target in results["targets"]:
        verdict = "PASS" if target["passed"] else "MISS"
        lines.append(
            f"  {target['name']:<42} {target['measured']:>10.3f} {target['limit']:>10.3f}  "
            f"{target['unit']:<7} {target['rule']:<28} {verdict}"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path:
    """Latency distributions (floors vs ours, first vs duplicate) and each target's margin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = results["samples_ms"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5), width_ratios=[3, 2])
    styles = {
        "floor_a": ("tab:gray", ":"),
        "floor_b": ("tab:brown", ":"),
        "floor_a_plus_b_paired": ("black", ":"),
        "first_fresh": ("tab:blue", "-"),
        "first_old": ("tab:cyan", "-"),
        "duplicate_fresh": ("tab:orange", "--"),
        "duplicate_old": ("tab:green", "--"),
    }
    for key, (color, style) in styles.items():
        values = sorted(samples.get(key, []))
        if not values:
            continue
        fractions = [(i + 1) / len(values) for i in range(len(values))]
        p50 = results["latency_ms"][key]["p50"]
        left.step(
            values, fractions, where="post", color=color, linestyle=style,
            label=f"{_SERIES[key]} (p50 {p50:.1f} ms)",
        )  # fmt: skip
    left.set_xscale("log")
    left.set_xlabel("latency seen by the sender (ms, log scale)")
    left.set_ylabel("fraction of requests")
    left.set_title("Sequential deliveries over HTTP, same run")
    left.grid(True, which="both", alpha=0.3)
    left.legend(loc="lower right", fontsize=8)

    names, ratios, colors = [], [], []
    for target in results["targets"]:
        names.append(target["name"])
        ratios.append(min(target["used"], 3.0))
        colors.append("tab:green" if target["passed"] else "tab:red")
    bars = right.barh(names, ratios, color=colors)
    labels = [f"{t['measured']:g} / {t['limit']:g} {t['unit']}" for t in results["targets"]]
    right.bar_label(bars, labels=labels, padding=3, fontsize=7)
    right.set_xlim(0, max([*ratios, 1.0]) * 1.35)
    right.axvline(1.0, color="black", linewidth=1)
    right.invert_yaxis()
    right.set_xlabel("share of the target's allowance used (< 1 passes)")
    right.set_title("Targets")
    right.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
