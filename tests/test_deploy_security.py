"""The deployment's security and data properties, asserted on terraform/ itself.

Each test reads the parsed configuration (tests/deploy/terraform.py) and states one property
the issue asks for: no secret in any file, least-privilege roles, the TTL policy, the index
exemptions and composite indexes, the function's entry point, runtime and settings, the
public invoker, APIs kept on destroy, point-in-time recovery and delete protection.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from handlers.access import CUSTOMER_ACCESS, USER_ACCESS, access_collections
from stripe_ledger import bundle
from stripe_ledger.config import SUBSCRIPTION_STATUSES, Settings
from tests.deploy.plan import evaluate, plan_lifecycle
from tests.deploy.terraform import (
    ROOT,
    TERRAFORM,
    Block,
    blocks_of,
    configuration,
    is_marker,
    literal,
    strings,
)
from tests.support import builtin_projections

PROJECTIONS = {p.collection for p in builtin_projections()}
BASIC_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
IAM_MEMBER_TYPES = {
    "google_project_iam_member",
    "google_secret_manager_secret_iam_member",
    "google_storage_bucket_iam_member",
    "google_artifact_registry_repository_iam_member",
    "google_cloud_run_v2_service_iam_member",
}
RUNTIME = "${google_service_account.runtime.member}"
BUILD = "${google_service_account.build.member}"
# Settings the function reads that the deployment deliberately leaves at their defaults.
LEFT_AT_DEFAULT = {
    "STRIPE_WEBHOOK_TOLERANCE",  # stripe's 300 s; the function refuses anything wider
    "STRIPE_REDELIVERY_AGE_SECONDS",  # an internal tuning knob of the claim
    "STRIPE_API_BASE",  # points the stripe client at a local fake, in tests only
}
# What handlers/access.py reads, as both functions are given it.
ACCESS_ENVIRONMENT = {
    "STRIPE_APP_USER_KEY": "${var.app_user_key}",
    "STRIPE_FEATURES_KEY": "${var.features_key}",
    "STRIPE_ACCESS_STATUSES": '${join(",", var.access_statuses)}',
    "STRIPE_CUSTOM_CLAIMS": "${tostring(var.custom_claims)}",
}
FUNCTIONS = ("webhook", "outbox")


def function(name: str = "webhook") -> Block:
    return configuration().resource(f"google_cloudfunctions2_function.{name}")


def service_config(name: str = "webhook") -> dict[str, Any]:
    (config,) = blocks_of(function(name).body, "service_config")
    return config


def dynamic_blocks(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The `dynamic "name"` blocks of a body, each as {for_each, content}."""
    found = []
    for entry in body.get("dynamic", []):
        for quoted, block in entry.items():
            if not is_marker(quoted) and literal(quoted) == name:
                found.append(block)
    return found


def iam_members() -> list[Block]:
    return [block for block in configuration().resources if block.type in IAM_MEMBER_TYPES]


def fields(resource_type: str = "google_firestore_field") -> list[Block]:
    return configuration().of_type(resource_type)


class TestNoSecretInConfiguration:
    SECRET_PATTERNS = (
        r"whsec_[A-Za-z0-9+/=]{16,}",  # a signing secret (placeholders like whsec_new pass)
        r"\b[sr]k_(live|test)_[A-Za-z0-9]{10,}",
        r"-----BEGIN [A-Z ]*PRIVATE KEY",
        r"\"private_key\"\s*:",
    )

    def test_no_secret_value_in_any_file(self) -> None:
        """No Stripe secret, API key or private key appears in terraform/ or the rules."""
        files = [*TERRAFORM.glob("*.tf"), TERRAFORM / "terraform.tfvars.example"]
        files.append(ROOT / "firestore.rules")
        for path in files:
            text = path.read_text()
            for pattern in self.SECRET_PATTERNS:
                assert not re.search(pattern, text), f"{path.name} matches {pattern}"

    def test_terraform_never_holds_a_secret_value(self) -> None:
        """No secret version is managed here, so no secret value reaches the state."""
        config = configuration()
        kinds = {block.type for block in config.resources} | {b.type for b in config.data}
        assert not {k for k in kinds if "secret_manager_secret_version" in k}
        for parsed in config.files.values():
            assert not {"secret_data", "secret_data_wo"} & set(strings(parsed))
        for name, variable in config.variables.items():
            if "secret" in name:
                assert literal(variable.get("default")) is None or not str(
                    literal(variable.get("default"))
                ).startswith(("whsec_", "sk_", "rk_")), name

    def test_secrets_reach_the_function_only_from_secret_manager(self) -> None:
        """The webhook secret and API key are secret environment variables, never plain ones."""
        environment = literal(service_config()["environment_variables"])
        assert not {"STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY"} & set(environment)
        mounted = {}
        for block in dynamic_blocks(service_config(), "secret_environment_variables"):
            (content,) = literal(block["content"])
            mounted[content["key"]] = content["secret"]
        for static in literal(blocks_of(service_config(), "secret_environment_variables")):
            mounted[static["key"]] = static["secret"]
        assert mounted == {
            "STRIPE_WEBHOOK_SECRET": "${google_secret_manager_secret.webhook_signing.secret_id}",
            "STRIPE_API_KEY": "${google_secret_manager_secret.api_key.secret_id}",
        }


class TestLeastPrivilege:
    def test_no_basic_role_and_no_authoritative_binding(self) -> None:
        """No owner/editor/viewer anywhere; only additive *_iam_member grants."""
        config = configuration()
        for block in config.resources:
            assert not block.type.endswith(("_iam_binding", "_iam_policy")), block.address
            assert block.get("role") not in BASIC_ROLES, block.address
        for parsed in config.files.values():
            assert not BASIC_ROLES & set(strings(parsed))

    def test_runtime_account_uses_the_ledger_and_its_own_secrets(self) -> None:
        """Runtime SA: roles/datastore.user on the ledger database, secretAccessor on its two
        secrets, nothing else unconditionally (custom claims' role: the next test)."""
        grants = [
            block
            for block in iam_members()
            if block.get("member") == RUNTIME and block.get("count") is None
        ]
        assert sorted((b.type, b.get("role")) for b in grants) == [
            ("google_project_iam_member", "roles/datastore.user"),
            ("google_secret_manager_secret_iam_member", "roles/secretmanager.secretAccessor"),
        ]
        (datastore,) = [b for b in grants if b.type == "google_project_iam_member"]
        (condition,) = datastore.get("condition")
        assert condition["expression"] == (
            'resource.name == "projects/${var.project_id}/databases/'
            '${google_firestore_database.ledger.name}"'
        )
        (secrets,) = [b for b in grants if b.type != "google_project_iam_member"]
        assert set(secrets.get("for_each").values()) == {
            "${google_secret_manager_secret.webhook_signing.id}",
            "${google_secret_manager_secret.api_key.id}",
        }
        assert secrets.get("secret_id") == "${each.value}"
        assert service_config()["service_account_email"] == (
            "${google_service_account.runtime.email}"
        )

    def test_firebase_auth_admin_only_with_custom_claims(self, tmp_path: Path) -> None:
        """The runtime SA's one conditional grant: roles/firebaseauth.admin, which setting
        custom claims needs, on as many instances as Terraform counts: none by default,
        one with custom_claims. Both functions run as that account and wait for it."""
        conditional = [
            block
            for block in iam_members()
            if block.get("member") == RUNTIME and block.get("count") is not None
        ]
        assert [(b.address, b.get("role")) for b in conditional] == [
            ("google_project_iam_member.runtime_firebaseauth_admin", "roles/firebaseauth.admin")
        ]
        (grant,) = conditional
        assert grant.get("project") == "${var.project_id}"
        assert "condition" not in grant.body
        count = str(grant.get("count"))[2:-1]
        assert configuration().default("custom_claims") is False
        for custom_claims, instances in ((False, 0), (True, 1)):
            workdir = tmp_path / str(custom_claims)
            values = evaluate(workdir, {"count": count}, variables={"custom_claims": custom_claims})
            assert values == {"count": instances}
        for name in FUNCTIONS:
            assert service_config(name)["service_account_email"] == (
                "${google_service_account.runtime.email}"
            )
            needs = function(name).get("depends_on")
            assert f"${{{grant.address}}}" in needs, name
            assert "${google_project_service.required}" in needs, name

    def test_build_account_has_only_what_cloud_build_needs(self) -> None:
        """Build SA: write logs, read the staged source, push to this deployment's repository."""
        grants = {
            (block.type, block.get("role")): block
            for block in iam_members()
            if block.get("member") == BUILD
        }
        assert set(grants) == {
            ("google_project_iam_member", "roles/logging.logWriter"),
            ("google_project_iam_member", "roles/storage.objectViewer"),
            ("google_storage_bucket_iam_member", "roles/storage.objectViewer"),
            ("google_artifact_registry_repository_iam_member", "roles/artifactregistry.writer"),
        }
        viewer = grants["google_project_iam_member", "roles/storage.objectViewer"]
        (condition,) = viewer.get("condition")
        assert condition["expression"].startswith(
            'resource.name.startsWith("projects/_/buckets/gcf-v2-sources-'
        )
        bucket = grants["google_storage_bucket_iam_member", "roles/storage.objectViewer"]
        assert bucket.get("bucket") == "${google_storage_bucket.source.name}"
        writer = grants[
            "google_artifact_registry_repository_iam_member", "roles/artifactregistry.writer"
        ]
        assert writer.get("repository") == "${google_artifact_registry_repository.functions.name}"
        (build,) = literal(function().body["build_config"])
        assert build["service_account"] == "${google_service_account.build.id}"
        assert build["docker_repository"] == "${google_artifact_registry_repository.functions.id}"

    def test_only_the_invoker_role_is_public(self) -> None:
        """allUsers gets roles/run.invoker on the function's service, and nothing else."""
        public = [
            b for b in iam_members() if b.get("member") in ("allUsers", "allAuthenticatedUsers")
        ]
        assert [(b.type, b.get("role")) for b in public] == [
            ("google_cloud_run_v2_service_iam_member", "roles/run.invoker")
        ]
        (invoker,) = public
        assert invoker.get("name") == "${google_cloudfunctions2_function.webhook.name}"
        assert invoker.get("count") == "${var.public_invoker ? 1 : 0}"
        assert configuration().default("public_invoker") is True


class TestFirestore:
    def test_database_is_native_with_pitr_and_delete_protection(self) -> None:
        """Native mode, point-in-time recovery on, delete protection on, abandoned on destroy."""
        database = configuration().resource("google_firestore_database.ledger")
        assert database.get("type") == "FIRESTORE_NATIVE"
        assert database.get("point_in_time_recovery_enablement") == "POINT_IN_TIME_RECOVERY_ENABLED"
        assert database.get("delete_protection_state") == "DELETE_PROTECTION_ENABLED"
        assert database.get("deletion_policy") == "ABANDON"
        assert database.get("name") == "${var.firestore_database}"
        assert configuration().default("firestore_database") == "(default)"

    def test_ttl_policy_on_expire_at(self) -> None:
        """The ledger and the outbox expire on `expire_at`, which is itself not indexed."""
        ttl = {
            (b.get("collection"), b.get("field"))
            for b in fields()
            if blocks_of(b.body, "ttl_config")
        }
        assert ttl == {
            ("${var.events_collection}", "expire_at"),
            ("${var.tasks_collection}", "expire_at"),
        }
        config = configuration()
        assert config.default("events_collection") == "stripe_events"
        assert config.default("tasks_collection") == "stripe_tasks"
        for block in fields():
            if blocks_of(block.body, "ttl_config"):
                assert literal(block.body["index_config"]) == [{}], block.address

    def test_large_fields_are_exempt_from_indexing(self) -> None:
        """payload and payload_zlib (ledger), payload (outbox), object (every projection) and
        the access documents' maps keyed by subscription or customer ID have no
        single-field index."""
        exempt: set[tuple[str, str]] = set()
        config = configuration()
        access = literal(config.locals["access_collections"])
        for block in fields():
            if literal(block.body.get("index_config")) != [{}] or blocks_of(
                block.body, "ttl_config"
            ):
                continue
            collection, field = block.get("collection"), block.get("field")
            for_each = block.get("for_each")
            if field == "${each.value}":
                names = re.findall(r'"([^"]+)"', for_each)
                exempt |= {(collection, name) for name in names}
            elif collection == "${each.value}":
                assert for_each == "${toset(var.projection_collections)}"
                exempt |= {(name, field) for name in config.default("projection_collections")}
            elif (collection, field) == ("${each.value.collection}", "${each.value.field}"):
                for spec in for_each.values():
                    name = re.fullmatch(
                        r"\$\{local\.access_collections\.(\w+)\}", spec["collection"]
                    )
                    assert name, spec
                    exempt.add((access[name[1]], spec["field"]))
            else:
                raise AssertionError(f"{block.address}: an exemption this test cannot read")
        assert exempt == {
            ("${var.events_collection}", "payload"),
            ("${var.events_collection}", "payload_zlib"),
            ("${var.tasks_collection}", "payload"),
            *((name, "object") for name in PROJECTIONS),
            (CUSTOMER_ACCESS, "subscriptions"),
            (USER_ACCESS, "subscriptions"),
            (USER_ACCESS, "customer_features"),
        }

    def test_access_collections_are_the_codes(self) -> None:
        """The collections local.access_collections names are the ones handlers/access.py
        keeps (not projections: they hold no `object`, so they are not in
        projection_collections)."""
        access = literal(configuration().locals["access_collections"])
        assert access == {"customer": CUSTOMER_ACCESS, "user": USER_ACCESS}
        assert set(access.values()) == set(access_collections())
        assert not set(access.values()) & set(configuration().default("projection_collections"))

    def test_composite_indexes_of_the_operations_queries(self) -> None:
        """(status, received_at desc), (type, received_at desc) and
        (status, type, received_at desc) on the ledger."""
        declared = {block.address for block in configuration().of_type("google_firestore_index")}
        assert declared == {"google_firestore_index.ledger", "google_firestore_index.tasks"}
        index = configuration().resource("google_firestore_index.ledger")
        assert index.get("collection") == "${var.events_collection}"
        assert index.get("query_scope") == "COLLECTION"
        (dynamic,) = dynamic_blocks(index.body, "fields")
        assert literal(dynamic["content"]) == [
            {"field_path": "${fields.value[0]}", "order": "${fields.value[1]}"}
        ]
        indexes = {tuple(map(tuple, spec)) for spec in index.get("for_each").values()}
        assert indexes == {
            (("status", "ASCENDING"), ("received_at", "DESCENDING")),
            (("type", "ASCENDING"), ("received_at", "DESCENDING")),
            (("status", "ASCENDING"), ("type", "ASCENDING"), ("received_at", "DESCENDING")),
        }

    def test_rules_file_is_deployed(self) -> None:
        """firestore.rules is the ruleset, released for the ledger database."""
        config = configuration()
        ruleset = config.resource("google_firebaserules_ruleset.firestore")
        (source,) = literal(ruleset.body["source"])
        (files,) = source["files"]
        assert files["content"] == '${file("${local.repo_root}/firestore.rules")}'
        release = config.resource("google_firebaserules_release.firestore")
        assert "google_firebaserules_ruleset.firestore.name" in release.get("ruleset_name")
        assert "cloud.firestore" in release.get("name")


class TestFunction:
    def test_entry_point_and_runtime(self) -> None:
        """Entry point stripe_webhook (defined in main.py), runtime python312 or python313."""
        (build,) = literal(function().body["build_config"])
        assert build["entry_point"] == "stripe_webhook"
        assert build["runtime"] == "${var.runtime}"
        config = configuration()
        assert config.default("runtime") == "python312"
        (validation,) = literal(config.variables["runtime"]["validation"])
        assert validation["condition"] == '${contains(["python312", "python313"], var.runtime)}'
        tree = ast.parse((ROOT / "main.py").read_text())
        assert "stripe_webhook" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}

    def test_every_setting_the_function_reads_is_deployed(self) -> None:
        """Each environment variable stripe_ledger/config.py reads is set (or a secret), except
        the ones deliberately left at their defaults."""
        source = (ROOT / "stripe_ledger" / "config.py").read_text()
        read = set(re.findall(r'"((?:STRIPE|GOOGLE|FIRESTORE)_[A-Z_]+)"', source))
        environment = set(literal(service_config()["environment_variables"]))
        secrets = {"STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY"}
        assert read - environment - secrets == LEFT_AT_DEFAULT
        assert "THREADS" in environment

    def test_threads_and_lease_follow_concurrency_and_timeout(self) -> None:
        """THREADS = max concurrency per instance; STRIPE_LEASE_SECONDS = the function timeout."""
        config = service_config()
        environment = literal(config["environment_variables"])
        assert (
            config["max_instance_request_concurrency"] == "${var.max_instance_request_concurrency}"
        )
        assert environment["THREADS"] == "${tostring(var.max_instance_request_concurrency)}"
        assert config["timeout_seconds"] == "${var.timeout_seconds}"
        assert environment["STRIPE_LEASE_SECONDS"] == "${tostring(var.timeout_seconds)}"

    def test_sizing_is_variable_with_documented_defaults(self) -> None:
        """Memory, CPU, concurrency, timeout and instance counts are variables with defaults."""
        config = configuration()
        service = service_config()
        for argument, variable, default in (
            ("available_memory", "available_memory", "512Mi"),
            ("available_cpu", "available_cpu", "1"),
            ("max_instance_request_concurrency", "max_instance_request_concurrency", 8),
            ("timeout_seconds", "timeout_seconds", 60),
            ("min_instance_count", "min_instance_count", 0),
            ("max_instance_count", "max_instance_count", 10),
        ):
            assert service[argument] == f"${{var.{variable}}}"
            assert config.default(variable) == default

    def test_source_is_the_bundle_make_bundle_writes(self) -> None:
        """Terraform uploads dist/function-source.zip, the file stripe_ledger/bundle.py
        writes, and reads the manifest written beside it: there is no second file list."""
        config = configuration()
        zip_path = literal(config.locals["bundle_zip"])
        manifest = literal(config.locals["bundle_manifest"])
        assert zip_path == "${local.repo_root}/" + bundle.OUTPUT.relative_to(ROOT).as_posix()
        assert manifest == "${local.repo_root}/dist/" + bundle.MANIFEST
        source = config.resource("google_storage_bucket_object.source")
        assert source.get("source") == "${local.bundle_zip}"
        assert not [b for b in config.data if b.type == "archive_file"], "one zip: the bundle"

    def test_any_code_change_redeploys(self) -> None:
        """The object's name is the bundle's SHA-256 (a deterministic zip), and the function
        points at that object."""
        config = configuration()
        assert literal(config.locals["source_hash"]) == (
            '${local.bundle == null ? "missing" : local.bundle.sha256}'
        )
        source = config.resource("google_storage_bucket_object.source")
        assert "${local.source_hash}" in source.get("name")
        (build,) = literal(function().body["build_config"])
        (storage,) = build["source"][0]["storage_source"]
        assert storage["object"] == "${google_storage_bucket_object.source.name}"

    def test_source_bucket_is_private(self) -> None:
        """Uniform bucket-level access and enforced public access prevention."""
        bucket = configuration().resource("google_storage_bucket.source")
        assert bucket.get("uniform_bucket_level_access") is True
        assert bucket.get("public_access_prevention") == "enforced"


class TestAccessSettings:
    """The settings of the access documents (handlers/access.py) reach both functions (the
    webhook keeps the documents, the outbox runs the tasks that mirror them), as the
    function's config.py reads them, and Terraform refuses a value the function would."""

    def test_both_functions_are_given_the_access_settings(self) -> None:
        for name in FUNCTIONS:
            environment = literal(service_config(name)["environment_variables"])
            assert {key: environment.get(key) for key in ACCESS_ENVIRONMENT} == (
                ACCESS_ENVIRONMENT
            ), name

    @pytest.mark.parametrize(
        "variables",
        [
            {},
            {
                "app_user_key": "firebase_uid",
                "features_key": "app_features",
                "access_statuses": ["active", "trialing", "past_due"],
                "custom_claims": True,
            },
        ],
        ids=["defaults", "set"],
    )
    def test_the_function_reads_what_terraform_passes(
        self, tmp_path: Path, variables: dict[str, Any]
    ) -> None:
        """Terraform renders the variables (defaults, then others) into the values the
        function's environment gets; Settings.from_env reads them back as the variables say,
        so the defaults are the function's own."""
        expressions = {key.lower(): value[2:-1] for key, value in ACCESS_ENVIRONMENT.items()}
        values = evaluate(tmp_path, expressions, variables=variables)
        settings = Settings.from_env(
            {key: values[key.lower()] for key in ACCESS_ENVIRONMENT}, require_secret=False
        )
        config = configuration()
        expected = {name: config.default(name) for name in ("app_user_key", "features_key")}
        expected |= {"access_statuses": config.default("access_statuses")}
        expected |= {"custom_claims": config.default("custom_claims"), **variables}
        assert {
            "app_user_key": settings.app_user_key,
            "features_key": settings.features_key,
            "access_statuses": list(settings.access_statuses),
            "custom_claims": settings.custom_claims,
        } == expected
        if not variables:
            defaults = Settings(webhook_secrets=())
            assert settings.access_statuses == defaults.access_statuses
            assert (settings.app_user_key, settings.features_key, settings.custom_claims) == (
                defaults.app_user_key,
                defaults.features_key,
                defaults.custom_claims,
            )

    def test_statuses_are_validated_against_the_functions_list(self) -> None:
        """access_statuses accepts exactly config.SUBSCRIPTION_STATUSES, as the function."""
        validations = literal(configuration().variables["access_statuses"]["validation"])
        conditions = [validation["condition"] for validation in validations]
        (listed,) = [re.findall(r'"([a-z_]+)"', c) for c in conditions if "contains(" in c]
        assert len(listed) == len(set(listed))
        assert set(listed) == SUBSCRIPTION_STATUSES

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("app_user_key", ""),
            ("app_user_key", "app,user"),
            ("app_user_key", " app_user_id"),
            ("app_user_key", "k" * 41),
            ("features_key", ""),
            ("features_key", "a,b"),
            ("access_statuses", []),
            ("access_statuses", ["active", "past-due"]),
            ("access_statuses", ["Active"]),
        ],
    )
    def test_a_value_the_function_would_refuse_or_misread_fails_the_plan(
        self, tmp_path: Path, variable: str, value: Any
    ) -> None:
        plan = plan_lifecycle(
            tmp_path,
            "google_cloudfunctions2_function.webhook",
            {"webhook_secret_version": "1", variable: value},
        )
        assert not plan.ok
        assert f"{variable} must" in plan.message, plan.output

    @pytest.mark.parametrize(
        "variables",
        [
            {"access_statuses": sorted(SUBSCRIPTION_STATUSES)},
            {"access_statuses": ["past_due"], "app_user_key": "k" * 40, "features_key": "f"},
            {"custom_claims": True},
        ],
    )
    def test_valid_values_plan(self, tmp_path: Path, variables: dict[str, Any]) -> None:
        plan = plan_lifecycle(
            tmp_path,
            "google_cloudfunctions2_function.webhook",
            {"webhook_secret_version": "1", **variables},
        )
        assert plan.ok, plan.output


class TestApis:
    def test_required_apis_stay_enabled_on_destroy(self) -> None:
        """Every API is enabled by google_project_service and never disabled by destroy."""
        config = configuration()
        (services,) = config.of_type("google_project_service")
        assert services.get("disable_on_destroy") is False
        assert services.get("disable_dependent_services") is False
        assert services.get("for_each") == "${local.services}"
        enabled = set(re.findall(r'"([a-z0-9.]+\.googleapis\.com)"', config.locals["services"]))
        assert {
            "cloudfunctions.googleapis.com",
            "cloudbuild.googleapis.com",
            "run.googleapis.com",
            "artifactregistry.googleapis.com",
            "firestore.googleapis.com",
            "firebaserules.googleapis.com",
            "secretmanager.googleapis.com",
            "logging.googleapis.com",
            "monitoring.googleapis.com",
        } <= enabled

    @pytest.mark.parametrize("custom_claims", [False, True])
    def test_identity_toolkit_only_with_custom_claims(
        self, tmp_path: Path, custom_claims: bool
    ) -> None:
        """local.services, as Terraform evaluates main.tf's text, holds the Identity Toolkit
        API (Firebase Authentication's, which firebase-admin calls to set custom claims)
        when custom_claims is true and only then, and every other API either way."""
        values = evaluate(
            tmp_path,
            {"services": "local.services"},
            variables={"custom_claims": custom_claims},
            locals_from=("main.tf",),
        )
        enabled = set(values["services"])
        listed = set(
            re.findall(r'"([a-z0-9.]+\.googleapis\.com)"', configuration().locals["services"])
        )
        optional = {"identitytoolkit.googleapis.com"}
        assert enabled == (listed if custom_claims else listed - optional)
        assert optional <= listed


class TestInterface:
    def test_every_variable_is_described_and_typed(self) -> None:
        """variables.tf: each variable has a description and a type."""
        for name, variable in configuration().variables.items():
            assert literal(variable.get("description")), name
            assert variable.get("type"), name

    def test_validated_variables(self) -> None:
        """Inputs that could break the function or its guarantees are validated."""
        config = configuration()
        validated = {name for name, v in config.variables.items() if v.get("validation")}
        assert {
            "project_id",
            "runtime",
            "available_cpu",
            "max_instance_request_concurrency",
            "timeout_seconds",
            "event_retention_days",
            "firestore_timeout_seconds",
            "webhook_secret_version",
            "app_user_key",
            "features_key",
            "access_statuses",
        } <= validated
        conditions = [
            c["condition"] for c in literal(config.variables["event_retention_days"]["validation"])
        ]
        assert conditions == ["${var.event_retention_days >= 30}"]

    def test_outputs(self) -> None:
        """The URL to paste into Stripe, the service account and the secret IDs are output."""
        outputs = configuration().outputs
        assert (
            literal(outputs["webhook_url"]["value"])
            == "${google_cloudfunctions2_function.webhook.url}"
        )
        for name in ("runtime_service_account", "webhook_secret_id", "api_key_secret_id"):
            assert name in outputs
        for name, output in outputs.items():
            assert literal(output.get("description")), name

    def test_tfvars_example_sets_only_declared_variables(self) -> None:
        """terraform.tfvars.example parses and names only variables that exist."""
        with (TERRAFORM / "terraform.tfvars.example").open() as handle:
            example = hcl2.load(handle)
        names = {key for key in example if not is_marker(key)}
        assert "project_id" in names
        assert names <= set(configuration().variables)

    def test_deploy_guide_names_what_exists(self) -> None:
        """docs/deploy.md's variable, output and default names are the configuration's."""
        guide = (ROOT / "docs" / "deploy.md").read_text()
        config = configuration()
        for name in re.findall(r"`([a-z_]+) = ", guide) + re.findall(r"-var ([a-z_]+)=", guide):
            assert name in config.variables, name
        for name in re.findall(r"terraform output -raw ([a-z_]+)", guide):
            assert name in config.outputs, name
        for variable in ("webhook_secret_id", "api_key_secret_id", "function_name"):
            assert config.default(variable) in guide, variable
