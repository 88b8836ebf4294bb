"""Following docs/deploy.md never deploys the webhook without its secret, and a fresh
project's first apply does not trip over its own log-based metrics.

The secret's precondition and the variable's validation are run by terraform plan itself
(tests/deploy/plan.py) on the configuration's own text; the bootstrap apply and the order of
the alert policies are read from the configuration.
"""

from __future__ import annotations

import re
from pathlib import Path

import hcl2
import pytest

from tests.deploy.plan import plan_lifecycle
from tests.deploy.terraform import ROOT, TERRAFORM, blocks_of, configuration, literal

WEBHOOK = "google_cloudfunctions2_function.webhook"
BOOTSTRAP = "terraform apply -target=terraform_data.bootstrap"
DOCS = (ROOT / "docs" / "deploy.md", ROOT / "README.md")


class TestNoWebhookWithoutItsSecret:
    def test_plan_fails_without_a_secret_version_and_says_what_to_set(self, tmp_path: Path) -> None:
        """With webhook_secret_version unset (null), the plan stops with a message naming
        the variable, terraform.tfvars and the first-deployment command."""
        plan = plan_lifecycle(tmp_path, WEBHOOK, {})
        assert not plan.ok
        assert "Resource precondition failed" in plan.message
        assert "webhook_secret_version is not set" in plan.message
        assert 'in terraform.tfvars as webhook_secret_version = "1"' in plan.message
        assert BOOTSTRAP.removeprefix("terraform apply ") in plan.message

    @pytest.mark.parametrize("version", ["1", "12", "latest"])
    def test_plan_passes_with_a_version(self, tmp_path: Path, version: str) -> None:
        plan = plan_lifecycle(tmp_path, WEBHOOK, {"webhook_secret_version": version})
        assert plan.ok, plan.output

    @pytest.mark.parametrize("version", ["0", "v1", ""])
    def test_a_malformed_version_is_refused(self, tmp_path: Path, version: str) -> None:
        plan = plan_lifecycle(tmp_path, WEBHOOK, {"webhook_secret_version": version})
        assert not plan.ok
        assert "webhook_secret_version must be" in plan.message

    def test_the_secret_is_always_mounted(self) -> None:
        """STRIPE_WEBHOOK_SECRET is a static block of the webhook, not a dynamic one that a
        null version would drop."""
        function = configuration().resource(WEBHOOK)
        (service,) = blocks_of(function.body, "service_config")
        (secret,) = literal(blocks_of(service, "secret_environment_variables"))
        assert secret["key"] == "STRIPE_WEBHOOK_SECRET"
        assert secret["version"] == "${var.webhook_secret_version}"

    def test_documented_flow_keeps_the_version_in_tfvars(self) -> None:
        """No guide sets the version on the command line (the next plain apply would drop
        it); the example tfvars carries the setting."""
        for path in DOCS:
            text = path.read_text()
            assert not re.search(r"-var[ =]+'?webhook_secret_version", text), path.name
        guide = DOCS[0].read_text()
        assert 'webhook_secret_version = "1"' in guide
        assert "terraform.tfvars" in guide
        example = (TERRAFORM / "terraform.tfvars.example").read_text()
        assert re.search(r"^# webhook_secret_version = \"1\"", example, re.MULTILINE)


class TestFirstApply:
    def test_bootstrap_creates_the_secret_and_every_metric(self) -> None:
        """`-target=terraform_data.bootstrap` creates the APIs, the secrets and every
        log-based metric, minutes before the full apply creates the alert policies."""
        config = configuration()
        bootstrap = config.resource("terraform_data.bootstrap")
        needs = set(bootstrap.get("depends_on"))
        metrics = {
            f"${{google_logging_metric.{b.name}}}" for b in config.of_type("google_logging_metric")
        }
        assert metrics <= needs
        assert "${google_secret_manager_secret.webhook_signing}" in needs
        assert "${google_project_service.required}" in needs

    def test_alert_policies_wait_for_the_builds(self) -> None:
        """Each alert policy is created after both functions' builds (minutes), besides its
        metric: a second margin when the bootstrap apply was skipped."""
        config = configuration()
        for policy in config.of_type("google_monitoring_alert_policy"):
            needs = set(policy.get("depends_on") or [])
            assert {
                "${google_cloudfunctions2_function.webhook}",
                "${google_cloudfunctions2_function.outbox}",
            } <= needs, policy.name
            (metric,) = re.findall(r"google_logging_metric\.(\w+)\.name", str(policy.body))
            assert f"${{google_logging_metric.{metric}}}" in needs

    def test_the_guide_starts_with_the_bootstrap_apply(self) -> None:
        """docs/deploy.md runs the bootstrap before the first full apply, and says why."""
        guide = DOCS[0].read_text()
        assert BOOTSTRAP in guide
        assert guide.index(BOOTSTRAP) < guide.index("make bundle && terraform")
        assert "11102" in guide

    def test_example_tfvars_parses(self) -> None:
        with (TERRAFORM / "terraform.tfvars.example").open() as handle:
            assert "project_id" in hcl2.load(handle)
