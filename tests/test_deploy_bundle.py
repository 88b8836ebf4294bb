"""`make bundle` (stripe_ledger/bundle.py) is the one definition of the deployed source.

The file set (core, built-in handlers, the packages of the handler modules), the zip's
determinism, the manifest, and Terraform's refusal to plan with a bundle that is missing,
stale, altered or built for other handler modules: those preconditions are run by the
terraform binary itself (tests/deploy/plan.py). These tests compile no requirements (that
needs the package index); tests/test_bundle_e2e.py does.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from stripe_ledger import bundle
from stripe_ledger.bundle import BundleError
from tests.deploy.plan import Plan, plan_lifecycle
from tests.deploy.terraform import TERRAFORM, configuration, literal
from tests.support import ROOT

PINNED = "flask==3.1.3 \\\n    --hash=sha256:00\n"
SOURCE = "google_storage_bucket_object.source"


def make_project(root: Path) -> Path:
    """A copy of this project's function, plus a user package `myapp` with a template."""
    root.mkdir(parents=True)
    shutil.copy(ROOT / "main.py", root / "main.py")
    shutil.copy(ROOT / "requirements.txt", root / "requirements.txt")
    for package in bundle.CORE_PACKAGES:
        shutil.copytree(
            ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    app = root / "myapp"
    (app / "templates").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "billing.py").write_text("from handlers import on\n")
    (app / "templates" / "receipt.txt").write_text("Thanks\n")
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "billing.cpython-312.pyc").write_bytes(b"\0")
    (app / ".secret.env").write_text("X=1\n")
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


class TestFileSet:
    def test_core_and_builtin_handlers_only_by_default(self) -> None:
        """main.py and the .py files of stripe_ledger/ and handlers/: no tests, no caches."""
        files = bundle.source_files([])
        assert "main.py" in files
        assert {"handlers/__init__.py", "stripe_ledger/http.py"} <= set(files)
        assert {Path(name).parts[0] for name in files} == {"main.py", "handlers", "stripe_ledger"}
        assert all(name.endswith(".py") and "__pycache__" not in name for name in files)

    def test_user_package_ships_whole_without_caches_or_hidden_files(self, project: Path) -> None:
        """`myapp.billing` ships all of myapp/ (its template too), no .pyc, no dot-files."""
        files = bundle.source_files(["myapp.billing"], project)
        shipped = {name for name in files if name.startswith("myapp/")}
        assert shipped == {"myapp/__init__.py", "myapp/billing.py", "myapp/templates/receipt.txt"}

    def test_single_module_and_builtin_module(self, project: Path) -> None:
        """A top-level module file ships alone; a module inside handlers/ adds nothing."""
        (project / "hooks.py").write_text("")
        files = bundle.source_files(["hooks", "handlers.invoices"], project)
        assert "hooks.py" in files
        assert not [name for name in files if name.startswith("myapp/")]

    @pytest.mark.parametrize(
        ("module", "message"),
        [
            ("myapp.biling", r"neither myapp/biling\.py nor myapp/biling/__init__\.py"),
            ("nothere", r"neither nothere\.py nor nothere/__init__\.py"),
            ("my-app.billing", "is not a Python import path"),
            ("handlers.nope", r"neither handlers/nope\.py"),
        ],
    )
    def test_a_module_that_is_not_there_is_refused(
        self, project: Path, module: str, message: str
    ) -> None:
        """A typo in handler_modules fails the bundle, not every delivery in production."""
        with pytest.raises(BundleError, match=message):
            bundle.source_files([module], project)


class TestZip:
    def test_same_inputs_same_bytes(self, project: Path, tmp_path: Path) -> None:
        """Two builds of the same inputs give the same SHA-256, whatever the files' mtimes."""
        first = bundle.build(["myapp.billing"], project, tmp_path / "a.zip", requirements=PINNED)
        (project / "myapp" / "billing.py").touch()
        second = bundle.build(["myapp.billing"], project, tmp_path / "b.zip", requirements=PINNED)
        assert first.sha256 == second.sha256
        assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()

    def test_fixed_timestamps_and_modes(self, project: Path) -> None:
        """Every entry is dated 1980-01-01 with mode 0644, names sorted."""
        built = bundle.build(["myapp.billing"], project, requirements=PINNED)
        with zipfile.ZipFile(built.zip_path) as archive:
            infos = archive.infolist()
            assert [i.filename for i in infos] == sorted(i.filename for i in infos)
            assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
            assert {i.external_attr >> 16 for i in infos} == {0o100644}
            assert archive.read("requirements.txt").decode() == PINNED

    def test_manifest_describes_the_zip(self, project: Path) -> None:
        """dist/function-source.json: the zip's SHA-256, the modules, and every input's
        SHA-256 by path relative to the project (what Terraform compares)."""
        (project / bundle.EXTRA_REQUIREMENTS).write_text("humanize\n")
        built = bundle.build(["myapp.billing"], project, requirements=PINNED)
        assert built.zip_path == project / "dist" / "function-source.zip"
        manifest = json.loads((project / "dist" / bundle.MANIFEST).read_text())
        assert manifest["sha256"] == built.sha256
        assert manifest["handler_modules"] == ["myapp.billing"]
        assert {"requirements.txt", bundle.EXTRA_REQUIREMENTS, "myapp/billing.py"} <= set(
            manifest["inputs"]
        )
        assert "requirements-handlers.in" not in manifest["files"]


class TestHandlerModulesList:
    def test_read_from_terraform_tfvars(self, tmp_path: Path) -> None:
        """`make bundle` reads the list Terraform deploys: handler_modules in tfvars."""
        tfvars = tmp_path / "terraform.tfvars"
        tfvars.write_text('project_id = "p"\nhandler_modules = ["myapp.billing", "myapp.tax"]\n')
        assert bundle.handler_modules_from_tfvars(tfvars) == ["myapp.billing", "myapp.tax"]
        assert bundle.handler_modules_from_tfvars(tmp_path / "absent.tfvars") == []

    def test_command_line_list_overrides(self, project: Path) -> None:
        """HANDLER_MODULES=... (comma- or space-separated) wins over the tfvars."""
        assert bundle._split(["myapp.billing, myapp.tax", "hooks"]) == [
            "myapp.billing",
            "myapp.tax",
            "hooks",
        ]

    def test_same_variable_as_terraform(self) -> None:
        """Both functions get STRIPE_HANDLER_MODULES from var.handler_modules, the variable
        the bundle's precondition compares with the manifest."""
        config = configuration()
        for name in ("webhook", "outbox"):
            function = config.resource(f"google_cloudfunctions2_function.{name}")
            (service,) = literal(function.body["service_config"])
            environment = service["environment_variables"]
            assert environment["STRIPE_HANDLER_MODULES"] == '${join(",", var.handler_modules)}'


def plan_source(workdir: Path, project: Path, modules: list[str]) -> Plan:
    return plan_lifecycle(
        workdir,
        SOURCE,
        {"handler_modules": modules},
        locals_from=("source.tf",),
        repo_root=project,
    )


class TestTerraformRefusesAWrongBundle:
    """terraform plan, run on source.tf's own preconditions and locals."""

    def test_plans_with_a_fresh_bundle(self, project: Path, tmp_path: Path) -> None:
        bundle.build(["myapp.billing"], project, requirements=PINNED)
        plan = plan_source(tmp_path / "tf", project, ["myapp.billing"])
        assert plan.ok, plan.output

    def test_no_bundle(self, project: Path, tmp_path: Path) -> None:
        plan = plan_source(tmp_path / "tf", project, [])
        assert not plan.ok
        assert "dist/function-source.zip has not been built: run `make bundle`" in plan.message

    def test_other_handler_modules(self, project: Path, tmp_path: Path) -> None:
        bundle.build([], project, requirements=PINNED)
        plan = plan_source(tmp_path / "tf", project, ["myapp.billing"])
        assert not plan.ok
        assert (
            "was built for handler modules [], but handler_modules is [myapp.billing]"
            in plan.message
        )

    def test_changed_source_after_the_build(self, project: Path, tmp_path: Path) -> None:
        bundle.build(["myapp.billing"], project, requirements=PINNED)
        (project / "myapp" / "billing.py").write_text("# changed\n")
        plan = plan_source(tmp_path / "tf", project, ["myapp.billing"])
        assert not plan.ok
        assert "dist/function-source.zip is older than myapp/billing.py" in plan.message

    def test_altered_zip(self, project: Path, tmp_path: Path) -> None:
        built = bundle.build([], project, requirements=PINNED)
        built.zip_path.write_bytes(b"not the zip")
        plan = plan_source(tmp_path / "tf", project, [])
        assert not plan.ok
        assert "is not the zip its manifest describes" in plan.message


def test_dist_is_ignored_by_git() -> None:
    """The bundle is built, never committed."""
    assert "dist/" in (ROOT / ".gitignore").read_text().split()
    assert (TERRAFORM / "source.tf").is_file()
