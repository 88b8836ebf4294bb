"""docs/deploy.md's "What it creates" stays the configuration's: the counts it states and
the resources it names are those of terraform/."""

from __future__ import annotations

import re

import pytest

from tests.deploy.terraform import ROOT, configuration

GUIDE = (ROOT / "docs" / "deploy.md").read_text()
TABLE = GUIDE[GUIDE.index("## What it creates") : GUIDE.index("Sizing defaults")]


def instances(resource_type: str) -> int:
    """How many instances the blocks of a type declare (a for_each map counted by its keys)."""
    total = 0
    for block in configuration().of_type(resource_type):
        for_each = block.body.get("for_each")
        if isinstance(for_each, dict):
            total += len([key for key in for_each if not key.startswith("__")])
        elif for_each is None and block.body.get("count") is None:
            total += 1
    return total


@pytest.mark.parametrize(
    ("phrase", "resource_type"),
    [
        ("composite indexes", "google_firestore_index"),
        ("log-based metrics", "google_logging_metric"),
        ("alert policies", "google_monitoring_alert_policy"),
        ("dashboard", "google_monitoring_dashboard"),
    ],
)
def test_stated_counts_match(phrase: str, resource_type: str) -> None:
    (stated,) = re.findall(rf"(\d+) {phrase}", TABLE)
    assert int(stated) == instances(resource_type), phrase


def test_named_resources_exist() -> None:
    """Every `type.name` address the table names is declared."""
    declared = {block.address for block in configuration().resources}
    named = re.findall(r"`((?:google_[a-z0-9_]+|terraform_data)\.[a-z0-9_]+)`", TABLE)
    assert named
    assert set(named) <= declared


def test_every_service_account_is_listed() -> None:
    config = configuration()
    for block in config.of_type("google_service_account"):
        variable = str(block.get("account_id")).removeprefix("${var.").removesuffix("}")
        assert f"`{config.default(variable)}`" in TABLE, variable
