"""The benchmark runs end to end in a tiny configuration and reports every metric.

Figures are never asserted here: on a shared machine they are noise. What is asserted is that
`python -m bench` measures everything issues 8 and 13 ask for, writes it as JSON and draws
the PNG.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench import cpu_split, stripe_ids
from bench import run as bench

TARGETS = {
    "first delivery p50",
    "duplicate (old event) p50",
    "duplicate (fresh event) p50",
    "RPCs, first delivery",
    "RPCs, duplicate (old event)",
    "RPCs, duplicate (fresh event)",
    "contention: deliveries answered 200/409",
    "contention p99",
    "contention: effects applied once",
    "hot object: answered 2xx at once",
    "hot object: slowest answer",
    "CPU per first delivery / raw transaction's",
    "throughput at concurrency 16 / raw",
    "cold start to first 200",
    "peak RSS, arbiter + worker",
}

TINY = [
    "--events=10",
    "--cold-starts=1",
    "--concurrency=4",
    "--throughput-requests=12",
    "--throughput-repeats=1",
    "--contention-events=3",
    "--contention-copies=3",
    "--contention-repeats=1",
    "--rpc-samples=1",
    "--warmup=1",
    "--hot-object-events=3",
    "--hot-object-repeats=1",
]


@dataclass(frozen=True)
class TinyRun:
    printed: str
    results: dict[str, Any]
    out: Path


@pytest.fixture(scope="module")
def tiny_run(emulator_host: str, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """`python -m bench` in a tiny configuration, once for this module."""
    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert bench.main([*TINY, f"--out={out}"]) == 0
    results = json.loads((out / "results.json").read_text())
    return TinyRun(printed.getvalue(), results, out)


class TestStripeIdsAreTimeOrdered:
    def test_reference_example_decodes_to_its_created(self) -> None:
        """Stripe's own API reference example carries its `created` second in the ID."""
        assert stripe_ids.decode_created("evt_1NG8Du2eZvKYlo2CUI79vXWy") == 1686089970

    def test_other_shapes_are_not_decoded(self) -> None:
        """Test IDs and older formats are not mistaken for time-ordered ones."""
        for value in ("evt_000000000000000000000000", "evt_test_invoice_payment_paid", "evt_abc"):
            assert stripe_ids.decode_created(value) is None

    def test_real_ids_sort_by_time(self) -> None:
        """In the captured fixtures, every ID whose `created` is real decodes to it within a
        second, so sorting IDs of one type as strings (Firestore's order) sorts them by time."""
        result = stripe_ids.measure(stripe_ids.sample())
        assert result["decoded_within_1s"] >= 20
        assert result["inversions_string_vs_time"] == 0


@pytest.mark.emulator
@pytest.mark.e2e
class TestBenchmarkSmoke:
    def test_reports_every_target(self, tiny_run: TinyRun) -> None:
        """Every target is in the JSON and the table, with value, limit, ratio and verdict."""
        assert {target["name"] for target in tiny_run.results["targets"]} == TARGETS
        for target in tiny_run.results["targets"]:
            assert {"measured", "limit", "unit", "rule", "passed"} <= target.keys()
            assert target["name"] in tiny_run.printed

    def test_reports_every_series(self, tiny_run: TinyRun) -> None:
        """Floors and ours are measured in the same run: latency, cold start, RPCs, load, RSS."""
        results = tiny_run.results
        for series in ("floor_a", "floor_b", "first_fresh", "first_old"):
            assert results["latency_ms"][series]["n"] == 10
        for series in ("duplicate_fresh", "duplicate_old"):
            assert results["latency_ms"][series]["n"] == 9
        assert set(results["cold_start_s"]) == {"floor_a", "floor_c", "ours", "floor_c_again"}
        rounds = results["cold_start_s"]["floor_c"]["n"]
        assert len(results["cold_start_control_ratios"]) == rounds
        assert {"first_fresh", "duplicate_fresh", "first_old", "duplicate_old"} <= set(
            results["rpcs"]
        )
        throughput = results["throughput"]
        assert throughput["ours_median_per_s"] > 0
        assert throughput["raw_median_per_s"] > 0
        assert min(throughput["ours_small_per_s"]) > 0
        assert "server" in throughput["cpu_ms_per_operation"]["ours"]
        assert results["memory_mib"]["peak_rss_sampled"] > 0
        assert results["hot_object"]["latency_ms"]["n"] == 3

    def test_draws_the_png(self, tiny_run: TinyRun) -> None:
        """The latency distributions and targets are drawn next to the JSON."""
        assert (tiny_run.out / "latency.png").stat().st_size > 10_000

    def test_contended_events_are_applied_once(self, tiny_run: TinyRun) -> None:
        """In the burst of simultaneous deliveries, every delivery is answered 200 or 409 and
        each event's effect is applied exactly once (correctness, not speed)."""
        contention = tiny_run.results["contention"]
        assert contention["answered_200_or_409"] == 9
        assert contention["effects_applied"] == {"1": 3}
        assert contention["unsettled_after_redelivery"] == 0
        assert tiny_run.results["unexpected_answers"] == {}

    def test_events_about_one_object_settle_on_the_newest_state(self, tiny_run: TinyRun) -> None:
        """Distinct events about one object, delivered at once and then redelivered until
        settled, leave its projection at the newest event's state."""
        hot = tiny_run.results["hot_object"]
        assert hot["unsettled_after_redelivery"] == 0
        assert hot["objects_holding_newest_state"] == 1


@pytest.mark.emulator
@pytest.mark.e2e
def test_cpu_split_prints_every_figure(emulator_host: str) -> None:
    """`python -m bench.cpu_split` prints the CPU and the voluntary context switches per
    operation of the raw transaction, the pipeline in process (first deliveries and
    duplicates), the served function and floor (a), at concurrency 1 and 16."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cpu_split.main(["--operations=3", "--rounds=1"]) == 0
    lines = [line.strip() for line in printed.getvalue().splitlines()]
    for concurrency in (1, 16):
        assert f"concurrency {concurrency}:" in lines
    names = ("raw transaction", "pipeline (deliver)", "fresh duplicate", "hour-old duplicate")
    for name in (*names, "served function", "floor (a)"):
        printed_lines = [line for line in lines if line.startswith(name)]
        assert len(printed_lines) == 2, name
        assert all(re.search(r"\b\d+\.\d switches$", line) for line in printed_lines), name
