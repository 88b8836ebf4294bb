"""The outbox's deployment, asserted on terraform/: the private runner function, its
invoker, the Cloud Scheduler job, the composite indexes its queries need (checked against the
queries the code builds), and the alert on dead-lettered tasks (checked against the lines the
code logs)."""

from __future__ import annotations

import ast
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1.types import StructuredQuery

from stripe_ledger import logs
from stripe_ledger.config import Settings
from stripe_ledger.outbox import Outbox, TaskStatus
from stripe_ledger.registry import HandlerRegistry
from tests.deploy.terraform import ROOT, Block, blocks_of, configuration, literal
from tests.test_deploy_monitoring import LogFilter, as_log_entries
from tests.test_deploy_security import dynamic_blocks, iam_members

OUTBOX = "google_cloudfunctions2_function.outbox"
INVOKER = "${google_service_account.outbox_invoker.member}"
OUTBOX_URI = "${google_cloudfunctions2_function.outbox.service_config[0].uri}"


def function(name: str) -> Block:
    return configuration().resource(f"google_cloudfunctions2_function.{name}")


def service_config(name: str) -> dict[str, Any]:
    (config,) = blocks_of(function(name).body, "service_config")
    return config


def environment(name: str) -> dict[str, str]:
    found: dict[str, str] = literal(service_config(name)["environment_variables"])
    return found


class TestRunnerFunction:
    def test_same_source_and_build_entry_point_run_outbox(self) -> None:
        """Built from the webhook's source zip, by the same account into the same repository;
        its entry point `run_outbox` is a function of main.py."""
        (outbox,) = literal(function("outbox").body["build_config"])
        (webhook,) = literal(function("webhook").body["build_config"])
        assert outbox["entry_point"] == "run_outbox"
        for argument in ("runtime", "service_account", "docker_repository", "source"):
            assert outbox[argument] == webhook[argument], argument
        tree = ast.parse((ROOT / "main.py").read_text())
        assert "run_outbox" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}

    def test_private_internal_ingress_no_public_invoker(self) -> None:
        """Ingress internal by default (ALLOW_ALL only as a validated opt-in); no grant on
        its service to allUsers, allAuthenticatedUsers or anyone but the invoker account."""
        config = configuration()
        assert service_config("outbox")["ingress_settings"] == "${var.outbox_ingress}"
        assert config.default("outbox_ingress") == "ALLOW_INTERNAL_ONLY"
        (validation,) = literal(config.variables["outbox_ingress"]["validation"])
        assert validation["condition"] == (
            '${contains(["ALLOW_INTERNAL_ONLY", "ALLOW_ALL"], var.outbox_ingress)}'
        )
        on_outbox = [b for b in iam_members() if b.get("name") == f"${{{OUTBOX}.name}}"]
        assert [(b.type, b.get("role"), b.get("member")) for b in on_outbox] == [
            ("google_cloud_run_v2_service_iam_member", "roles/run.invoker", INVOKER)
        ]

    def test_runs_as_the_webhook_without_its_signing_secret(self) -> None:
        """The runtime account (executors need the same rights in both functions); only the
        optional API key is mounted, never the webhook signing secret."""
        config = service_config("outbox")
        assert config["service_account_email"] == "${google_service_account.runtime.email}"
        mounted = {}
        for block in dynamic_blocks(config, "secret_environment_variables"):
            (content,) = literal(block["content"])
            mounted[content["key"]] = content["secret"]
        assert mounted == {"STRIPE_API_KEY": "${google_secret_manager_secret.api_key.secret_id}"}
        assert "STRIPE_WEBHOOK_SECRET" not in environment("outbox")

    def test_settings_are_the_webhooks_but_lease_and_threads(self) -> None:
        """Tasks run with the webhook's settings (collections, handler modules, attempts,
        timeouts); its lease is its own timeout, and it serves one run at a time."""
        outbox, webhook = environment("outbox"), environment("webhook")
        assert set(outbox) == set(webhook)
        differing = {name for name in outbox if outbox[name] != webhook[name]}
        assert differing == {"STRIPE_LEASE_SECONDS", "THREADS"}
        assert outbox["STRIPE_LEASE_SECONDS"] == "${tostring(var.outbox_timeout_seconds)}"
        assert outbox["THREADS"] == "1"
        config = service_config("outbox")
        assert config["max_instance_request_concurrency"] == 1
        assert config["timeout_seconds"] == "${var.outbox_timeout_seconds}"
        assert {"STRIPE_TASKS_COLLECTION", "STRIPE_TASK_MAX_ATTEMPTS"} <= set(webhook)

    def test_its_timeout_covers_the_webhooks_lease_constraints(self) -> None:
        """outbox_timeout_seconds (its lease) is at least timeout_seconds, whose validations
        already bound the Firestore and API calls, and fits Cloud Scheduler's deadline."""
        config = configuration()
        (validation,) = literal(config.variables["outbox_timeout_seconds"]["validation"])
        assert validation["condition"] == (
            "${var.outbox_timeout_seconds >= var.timeout_seconds && "
            "var.outbox_timeout_seconds <= 1800}"
        )
        assert config.default("outbox_timeout_seconds") >= config.default("timeout_seconds")


class TestInvokerAndSchedule:
    def test_the_invoker_account_may_only_invoke_the_runner(self) -> None:
        """A dedicated account whose one grant is roles/run.invoker on the runner's service."""
        grants = [b for b in iam_members() if b.get("member") == INVOKER]
        assert [(b.type, b.get("role")) for b in grants] == [
            ("google_cloud_run_v2_service_iam_member", "roles/run.invoker")
        ]
        (grant,) = grants
        assert grant.get("location") == f"${{{OUTBOX}.location}}"
        account = configuration().resource("google_service_account.outbox_invoker")
        assert account.get("account_id") == "${var.outbox_invoker_service_account_id}"

    def test_scheduler_calls_the_runner_with_an_oidc_token(self) -> None:
        """Every minute by default (UTC), POST to the runner's run.app URL with an OIDC token
        of the invoker for that URL; no retries (the next tick is one); the attempt may last
        as long as the function."""
        config = configuration()
        job = config.resource("google_cloud_scheduler_job.outbox")
        assert job.get("schedule") == "${var.outbox_schedule}"
        assert config.default("outbox_schedule") == "* * * * *"
        assert job.get("time_zone") == "Etc/UTC"
        assert job.get("region") == "${var.region}"
        assert job.get("attempt_deadline") == "${var.outbox_timeout_seconds}s"
        (retry,) = job.get("retry_config")
        assert retry == {"retry_count": 0}
        (target,) = job.get("http_target")
        assert (target["http_method"], target["uri"]) == ("POST", OUTBOX_URI)
        (token,) = target["oidc_token"]
        assert token == {
            "service_account_email": "${google_service_account.outbox_invoker.email}",
            "audience": OUTBOX_URI,
        }
        assert "oauth_token" not in target

    def test_cloud_scheduler_api_is_enabled(self) -> None:
        assert "cloudscheduler.googleapis.com" in configuration().locals["services"]


def _index_specs() -> set[tuple[tuple[str, str], ...]]:
    """The (field, order) lists of the tasks collection's declared composite indexes."""
    index = configuration().resource("google_firestore_index.tasks")
    assert index.get("collection") == "${var.tasks_collection}"
    assert index.get("query_scope") == "COLLECTION"
    return {tuple(map(tuple, spec)) for spec in index.get("for_each").values()}


Index = tuple[tuple[str, str], ...]


def _required_index(query: firestore.Query) -> tuple[frozenset[str], Index] | None:
    """What a query needs of a composite index: its equality fields (ascending, in any
    order), then its order; None when the automatic single-field indexes serve it."""
    proto = query._to_protobuf()
    where = proto.where
    filters = [
        f
        for f in (
            [f.field_filter for f in where.composite_filter.filters]
            if where.composite_filter.filters
            else [where.field_filter]
        )
        if f.field.field_path  # an unfiltered query has an empty filter
    ]
    equal = StructuredQuery.FieldFilter.Operator.EQUAL
    equalities = frozenset(f.field.field_path for f in filters if f.op == equal)
    ranges = {f.field.field_path for f in filters if f.op != equal}
    descending = StructuredQuery.Direction.DESCENDING
    orders = tuple(
        (o.field.field_path, "DESCENDING" if o.direction == descending else "ASCENDING")
        for o in proto.order_by
    )
    assert ranges <= {field for field, _ in orders[:1]}, "a range must be on the first order"
    return (equalities, orders) if equalities else None


def _served(equalities: frozenset[str], orders: Index, specs: set[Index]) -> bool:
    count = len(equalities)
    return any(
        {field for field, _ in spec[:count]} == equalities
        and all(direction == "ASCENDING" for _, direction in spec[:count])
        and spec[count:] == orders
        for spec in specs
    )


class TestTaskIndexes:
    @pytest.fixture
    def outbox(self) -> Outbox:
        # A client is only built here, never called: queries are compiled, not run.
        db = firestore.Client(project="index-check", credentials=AnonymousCredentials())
        return Outbox(db, Settings(webhook_secrets=()), HandlerRegistry())

    def test_indexes_declared(self) -> None:
        """(status, next_attempt_at), and the listings' (status|task|both, created_at DESC)."""
        assert _index_specs() == {
            (("status", "ASCENDING"), ("next_attempt_at", "ASCENDING")),
            (("status", "ASCENDING"), ("created_at", "DESCENDING")),
            (("task", "ASCENDING"), ("created_at", "DESCENDING")),
            (("status", "ASCENDING"), ("task", "ASCENDING"), ("created_at", "DESCENDING")),
        }

    def test_every_query_of_the_outbox_fits_a_declared_index(self, outbox: Outbox) -> None:
        """The due queries (per status) and every listing (no filter, status, task, both)
        are served by a declared composite index or a single-field one."""
        now = datetime.now(UTC)
        queries = [outbox.due_query(status, now) for status in TaskStatus]
        for status in (None, "dead"):
            for task in (None, "send_receipt"):
                queries.append(outbox.list_query(status=status, task=task))
        specs = _index_specs()
        needed = [required for q in queries if (required := _required_index(q)) is not None]
        assert len(needed) == len(TaskStatus) + 3  # all but the unfiltered listing
        for equalities, orders in needed:
            assert _served(equalities, orders, specs), (equalities, orders)


@pytest.fixture
def restore_logging() -> Iterator[io.StringIO]:
    ours = logs.logger
    saved = (ours.handlers[:], ours.level, ours.propagate)
    stream = io.StringIO()
    logs.configure(stream)
    yield stream
    ours.handlers, ours.propagate = saved[0], saved[2]
    ours.setLevel(saved[1])


def _metric_filter(name: str) -> str:
    config = configuration()
    text = str(config.resource(f"google_logging_metric.{name}").get("filter"))
    text = text.replace("${local.function_logs}", literal(config.locals["function_logs"]))
    for variable in ("function_name", "outbox_function_name"):
        text = text.replace(f"${{var.{variable}}}", config.default(variable))
    assert "${" not in text, text
    return text


class TestDeadTaskAlert:
    def test_the_metric_counts_dead_tasks_of_both_functions_only(
        self, restore_logging: io.StringIO
    ) -> None:
        """Lines the outbox logs for a done, a failed and a dead run, as each function's
        Cloud Run service would store them: the dead-task metric counts the dead run in
        either service, and the dead-lettered *events* metric counts none of them."""
        from stripe_ledger.outbox import TaskResult
        from stripe_ledger.outbox.tasks import logged

        for outcome in ("done", "failed", "dead"):
            logged(TaskResult("k", "send_receipt", "evt_1", "pending", outcome, attempt=1))
        lines = [json.loads(line) for line in restore_logging.getvalue().splitlines()]
        assert [line["severity"] for line in lines] == ["INFO", "WARNING", "ERROR"]
        config = configuration()
        tasks = LogFilter(_metric_filter("dead_tasks"))
        events = LogFilter(_metric_filter("dead_lettered"))
        for service in (config.default("function_name"), config.default("outbox_function_name")):
            entries = as_log_entries(iter(lines), service)
            assert [e["jsonPayload"]["task_status"] for e in entries if tasks.matches(e)] == [
                "dead"
            ]
            assert not [e for e in entries if events.matches(e)]
        elsewhere = as_log_entries(iter(lines), "another-service")
        assert not [e for e in elsewhere if tasks.matches(e)]

    def test_the_task_runs_metric_counts_every_logged_run_by_service(
        self, restore_logging: io.StringIO
    ) -> None:
        """The dashboard's outbox panel: every run the outbox logs, in either function, is
        counted once with its outcome and the service that ran it; nothing elsewhere."""
        from stripe_ledger.outbox import TaskResult
        from stripe_ledger.outbox.tasks import logged

        for outcome in ("done", "failed", "dead", "lease_lost"):
            logged(TaskResult("k", "send_receipt", "evt_1", "pending", outcome, attempt=1))
        lines = [json.loads(line) for line in restore_logging.getvalue().splitlines()]
        config = configuration()
        runs = LogFilter(_metric_filter("task_runs"))
        for service in (config.default("function_name"), config.default("outbox_function_name")):
            entries = as_log_entries(iter(lines), service)
            counted = [e["jsonPayload"]["task_status"] for e in entries if runs.matches(e)]
            assert counted == ["done", "failed", "dead", "lease_lost"]
        assert not [e for e in as_log_entries(iter(lines), "other") if runs.matches(e)]
        metric = config.resource("google_logging_metric.task_runs")
        assert metric.get("label_extractors") == {
            "task_status": "EXTRACT(jsonPayload.task_status)",
            "service": "EXTRACT(resource.labels.service_name)",
        }

    def test_the_alert_watches_the_metric(self) -> None:
        policy = configuration().resource("google_monitoring_alert_policy.dead_tasks")
        (condition,) = policy.get("conditions")
        (threshold,) = condition["condition_threshold"]
        expected = "logging.googleapis.com/user/${google_logging_metric.dead_tasks.name}"
        assert f'metric.type="{expected}"' in threshold["filter"]
        assert threshold["comparison"] == "COMPARISON_GT"
        assert policy.get("notification_channels") == "${local.notification_channels}"
        metric = configuration().resource("google_logging_metric.dead_tasks")
        assert metric.get("label_extractors") == {"task": "EXTRACT(jsonPayload.task)"}


def test_outputs_name_the_runner_and_its_invoker() -> None:
    outputs = configuration().outputs
    assert literal(outputs["outbox_function_uri"]["value"]) == OUTBOX_URI
    assert (
        literal(outputs["outbox_invoker_service_account"]["value"])
        == "${google_service_account.outbox_invoker.email}"
    )
