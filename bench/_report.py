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


def _machine(meta: dict[str, Any]) -> str:
    memory = f", {meta['memory_gib']} GiB" if meta.get("memory_gib") else ""
    return f"{meta['cpus']} CPUs{memory}, {meta.get('machine', '?')}, Python {meta['python']}"


def _versions(meta: dict[str, Any]) -> str:
    return ", ".join(f"{package} {version}" for package, version in meta["versions"].items())


def _ratio(target: dict[str, Any]) -> str:
    """The target's measured value over its limit, as the bar's label says it."""
    if not target["limit"]:
        return "-"
    return f"{target['measured'] / target['limit']:.2f}x"


def table(results: dict[str, Any]) -> str:
    """The run as text: floors and ours side by side, RPCs, load, then every target."""
    meta, latency = results["meta"], results["latency_ms"]
    config = meta["config"]
    lines = [
        f"Benchmark of {meta['started']}: {config['events']} events, {_machine(meta)}, "
        f"{meta['duration_s']} s",
        f"  {_versions(meta)}",
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
        _row("floor (c) again, in the same rounds", cold["floor_c_again"], "s"),
        f"  ours / floor (c) within each round: {results['cold_start_paired_ratios']} "
        f"(median {results['cold_start_paired_ratio_p50']})",
        "  floor (c) started again / floor (c), the same rounds (the noise alone): "
        f"{results['cold_start_control_ratios']}",
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
        f"    ours with bench.counter events (one small document): "
        f"{throughput['ours_small_per_s']} (ratios to raw {throughput['small_ratios']})",
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
    lines += [
        "",
        f"  {'target':<42} {'measured':>10} {'limit':>10} {'ratio':>7}  {'unit':<7} {'rule':<32}",
    ]
    for target in results["targets"]:
        verdict = "PASS" if target["passed"] else "MISS"
        lines.append(
            f"  {target['name']:<42} {target['measured']:>10.3f} {target['limit']:>10.3f} "
            f"{_ratio(target):>7}  {target['unit']:<7} {target['rule']:<32} {verdict}"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path:
    """The run on one page: latency distributions (floors vs ours, first vs duplicate), cold
    starts, the contention and hot-object bursts, and each target's measured ratio; the date,
    machine and versions in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, meta = results["samples_ms"], results["meta"]
    figure, axes = plt.subplots(2, 2, figsize=(15, 10), width_ratios=[3, 2])
    (latency, targets), (cold, bursts) = axes
    figure.suptitle(
        f"stripe-ledger benchmark, {meta['started']}: {_machine(meta)}\n{_versions(meta)}; "
        f"Firestore emulator {meta['emulator']}",
        fontsize=9,
    )
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
        p50 = results["latency_ms"][key]["p50"]
        _cdf(latency, samples.get(key, []), color, style, f"{_SERIES[key]} (p50 {p50:.1f} ms)")
    latency.set_title("Sequential deliveries over HTTP, same run")
    _cdf_axes(latency, "latency seen by the sender (ms, log scale)")

    kinds = {
        "floor_a": "floor (a)",
        "floor_c": "floor (c)",
        "floor_c_again": "floor (c) again",
        "ours": "ours",
    }
    cold_samples = [[ms / 1000 for ms in samples.get(f"cold_{kind}", [])] for kind in kinds]
    cold.boxplot(cold_samples, orientation="horizontal")
    cold.set_yticks(range(1, len(kinds) + 1), list(kinds.values()))
    for row, values in enumerate(cold_samples, start=1):
        cold.scatter(values, [row] * len(values), color="tab:blue", s=12, zorder=3)
    ratios = ", ".join(f"{ratio:.2f}" for ratio in results["cold_start_paired_ratios"])
    control = ", ".join(f"{ratio:.2f}" for ratio in results["cold_start_control_ratios"])
    cold.set_title(
        f"Cold start, spawn to first 200; ours / floor (c) per round: {ratios}\n"
        f"floor (c) again / floor (c), the noise alone: {control}"
    )
    cold.set_xlabel("seconds")
    cold.grid(True, alpha=0.3)

    contention, hot = results["contention"], results["hot_object"]
    burst_series = [
        ("throughput_ours", "tab:blue", "-", "ours at concurrency 16"),
        (
            "contention",
            "tab:orange",
            "-",
            f"contention: {contention['events']} events x {contention['copies']} at once",
        ),
        ("hot_object", "tab:red", "-", f"hot object: {hot['events_per_object']} events at once"),
    ]
    for key, color, style, label in burst_series:
        _cdf(bursts, samples.get(key, []), color, style, label)
    bursts.set_title("Under load: concurrency 16, and bursts at one instant")
    _cdf_axes(bursts, "latency seen by the sender (ms, log scale)")

    names, used, colors = [], [], []
    for target in results["targets"]:
        names.append(target["name"])
        used.append(min(target["used"], 3.0))
        colors.append("tab:green" if target["passed"] else "tab:red")
    bars = targets.barh(names, used, color=colors)
    labels = [
        f"{_ratio(t)}: {t['measured']:g} / {t['limit']:g} {t['unit']}" for t in results["targets"]
    ]
    targets.bar_label(bars, labels=labels, padding=3, fontsize=7)
    targets.set_xlim(0, max([*used, 1.0]) * 1.6)
    targets.axvline(1.0, color="black", linewidth=1)
    targets.invert_yaxis()
    targets.set_xlabel("share of the target's allowance used (< 1 passes)")
    targets.set_title("Targets: measured / limit")
    targets.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _cdf(axis: Any, values: list[float], color: str, style: str, label: str) -> None:
    ordered = sorted(values)
    if ordered:
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axis.step(ordered, fractions, where="post", color=color, linestyle=style, label=label)


def _cdf_axes(axis: Any, xlabel: str) -> None:
    from matplotlib.ticker import ScalarFormatter

    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_formatter(ScalarFormatter())
    axis.tick_params(axis="x", which="minor", labelsize=6)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("fraction of requests")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
