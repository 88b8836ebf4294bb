"""docs/deploy.md's "What it creates" stays the configuration's: the counts it states and
the resources it names are those of terraform/."""

from __future__ import annotations

import json
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


def test_access_section_names_the_settings_role_and_api() -> None:
    """The guide's access section lists each access variable with its environment variable
    and the default Terraform gives it, and names the role and the API that custom claims
    add (and that they are off by default): the ones terraform/ grants and enables."""
    start = GUIDE.index("## Access and custom claims")
    section = GUIDE[start : GUIDE.index("\n## ", start + 1)]
    config = configuration()
    for variable, environment in (
        ("app_user_key", "STRIPE_APP_USER_KEY"),
        ("features_key", "STRIPE_FEATURES_KEY"),
        ("access_statuses", "STRIPE_ACCESS_STATUSES"),
        ("custom_claims", "STRIPE_CUSTOM_CLAIMS"),
    ):
        default = json.dumps(config.default(variable), separators=(", ", ": "))
        row = f"| `{variable}` | `{environment}` | `{default.strip(chr(34))}` |"
        assert row in section, row
    grant = config.resource("google_project_iam_member.runtime_firebaseauth_admin")
    assert f"`{grant.get('role')}`" in section
    assert "identitytoolkit.googleapis.com" in str(config.locals["services"])
    assert "Identity Toolkit" in section
    assert "**off by default**" in section
