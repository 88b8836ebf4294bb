"""The Cloud Monitoring dashboard (terraform/dashboard.tf) charts the log-based metrics.

Terraform itself renders terraform/dashboard.json.tftpl with the values dashboard.tf passes
(the metrics' names resolved to their defaults) and decodes it as JSON; every chart must
query a declared log-based metric, group by labels that metric extracts, and aggregate as
its kind requires; docs/deploy.md names every panel.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.plan import evaluate
from tests.deploy.terraform import ROOT, TERRAFORM, configuration, literal

TEMPLATE = TERRAFORM / "dashboard.json.tftpl"
_USER_METRIC = re.compile(r'metric\.type="logging\.googleapis\.com/user/([^"]+)"')


def metric_names() -> dict[str, str]:
    """Each log-based metric's name (its defaults resolved) -> its resource name."""
    config = configuration()
    found = {}
    for block in config.of_type("google_logging_metric"):
        name = str(block.get("name")).replace(
            "${var.function_name}", config.default("function_name")
        )
        found[name] = block.name
    return found


def template_values() -> dict[str, str]:
    """The map dashboard.tf passes to templatefile(), with references resolved."""
    config = configuration()
    text = (TERRAFORM / "dashboard.tf").read_text()
    arguments = text[text.index("templatefile(") : text.index("})")]
    values = {}
    for key, value in re.findall(r"^\s+(\w+)\s+= (.+)$", arguments, re.MULTILINE):
        values[key] = value[1:-1] if value.startswith('"') else "${" + value + "}"
    by_resource = {resource: name for name, resource in metric_names().items()}
    resolved = {}
    for key, value in values.items():
        value = re.sub(
            r"\$\{google_logging_metric\.(\w+)\.name\}", lambda m: by_resource[m[1]], value
        )
        for variable in ("function_name", "outbox_function_name"):
            value = value.replace(f"${{var.{variable}}}", config.default(variable))
        assert "${" not in value, value
        resolved[key] = value
    return resolved


@cache
def rendered(workdir: Path) -> dict[str, Any]:
    expression = (
        f"jsondecode(templatefile({json.dumps(str(TEMPLATE))}, {json.dumps(template_values())}))"
    )
    dashboard: dict[str, Any] = evaluate(workdir, {"dashboard": expression})["dashboard"]
    return dashboard


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return rendered(tmp_path_factory.mktemp("dashboard"))


def tiles(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dashboard["mosaicLayout"]["tiles"]
    return found


def data_sets(tile: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = tile["widget"]["xyChart"]["dataSets"]
    return found


def metric_of(data_set: dict[str, Any]) -> str:
    (name,) = _USER_METRIC.findall(data_set["timeSeriesQuery"]["timeSeriesFilter"]["filter"])
    return metric_names()[name]


class TestDashboard:
    def test_is_a_terraform_resource_from_the_template(self) -> None:
        """One google_monitoring_dashboard whose JSON is the template, rendered."""
        (board,) = configuration().of_type("google_monitoring_dashboard")
        assert 'templatefile("${path.module}/dashboard.json.tftpl"' in board.get("dashboard_json")
        assert board.get("project") == "${var.project_id}"

    def test_every_chart_queries_a_declared_metric(self, dashboard: dict[str, Any]) -> None:
        """The six panels chart all six log-based metrics between them."""
        charted = {metric_of(d) for tile in tiles(dashboard) for d in data_sets(tile)}
        assert charted == set(metric_names().values())
        assert len(tiles(dashboard)) == 6

    def test_groups_by_labels_the_metric_extracts(self, dashboard: dict[str, Any]) -> None:
        """`metric.label.X` grouped on (and filtered on) is a label of the metric."""
        config = configuration()
        for tile in tiles(dashboard):
            for data_set in data_sets(tile):
                metric = config.resource(f"google_logging_metric.{metric_of(data_set)}")
                labels = set(literal(metric.body.get("label_extractors", {})))
                query = data_set["timeSeriesQuery"]["timeSeriesFilter"]
                used = {
                    f.removeprefix("metric.label.")
                    for f in query["aggregation"].get("groupByFields", [])
                }
                used |= set(re.findall(r"metric\.label\.(\w+)=", query["filter"]))
                assert used <= labels, (tile["widget"]["title"], used, labels)

    def test_aggregation_fits_the_metric_kind(self, dashboard: dict[str, Any]) -> None:
        """Counters are summed per minute; the latency distribution gives percentiles."""
        config = configuration()
        for tile in tiles(dashboard):
            for data_set in data_sets(tile):
                metric = config.resource(f"google_logging_metric.{metric_of(data_set)}")
                (descriptor,) = literal(metric.body["metric_descriptor"])
                aggregation = data_set["timeSeriesQuery"]["timeSeriesFilter"]["aggregation"]
                if descriptor["value_type"] == "DISTRIBUTION":
                    assert aggregation["perSeriesAligner"] == "ALIGN_DELTA"
                    assert aggregation["crossSeriesReducer"].startswith("REDUCE_PERCENTILE_")
                else:
                    assert aggregation["perSeriesAligner"] == "ALIGN_SUM"
                    assert aggregation["crossSeriesReducer"] == "REDUCE_SUM"

    def test_outbox_panel_shows_the_runners_work(self, dashboard: dict[str, Any]) -> None:
        """The backlog panel counts the task runs of the outbox runner, by outcome."""
        (tile,) = [t for t in tiles(dashboard) if "Outbox" in t["widget"]["title"]]
        (data_set,) = data_sets(tile)
        query = data_set["timeSeriesQuery"]["timeSeriesFilter"]
        outbox = configuration().default("outbox_function_name")
        assert f'metric.label.service="{outbox}"' in query["filter"]
        assert query["aggregation"]["groupByFields"] == ["metric.label.task_status"]

    def test_tiles_fit_the_grid_without_overlap(self, dashboard: dict[str, Any]) -> None:
        columns = dashboard["mosaicLayout"]["columns"]
        cells: set[tuple[int, int]] = set()
        for tile in tiles(dashboard):
            x, y = tile.get("xPos", 0), tile.get("yPos", 0)
            assert x + tile["width"] <= columns
            covered = {
                (i, j) for i in range(x, x + tile["width"]) for j in range(y, y + tile["height"])
            }
            assert not covered & cells, tile["widget"]["title"]
            cells |= covered

    def test_deploy_guide_lists_every_panel(self, dashboard: dict[str, Any]) -> None:
        """docs/deploy.md names each panel by its title and says what it answers."""
        guide = (ROOT / "docs" / "deploy.md").read_text()
        for tile in tiles(dashboard):
            assert f"**{tile['widget']['title']}**" in guide, tile["widget"]["title"]
