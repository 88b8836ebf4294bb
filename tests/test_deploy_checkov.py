"""checkov passes on terraform/, and each check it skips is skipped on purpose, with a reason.

checkov lives in its own virtual environment (.venv-checkov, made by `make install`): it pins
a python-hcl2 that conflicts with the project's.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.terraform import ROOT, TERRAFORM

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
_SKIP = re.compile(r"#\s*checkov:skip=(?P<check>[A-Z0-9_]+)(?::(?P<reason>.*))?")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """checkov's JSON report on terraform/ (run once for this module)."""
    if not CHECKOV.exists():
        pytest.fail(f"checkov is missing: {CHECKOV} does not exist; run `make install`")
    result = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(TERRAFORM),
            "--framework",
            "terraform",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode not in (0, 1):  # 1: some check failed; anything else: checkov broke
        pytest.fail(f"checkov exited {result.returncode}:\n{result.stderr[-3000:]}")
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def inline_skips() -> list[tuple[str, str, str]]:
    """(file, check ID, reason) of every `#checkov:skip=` comment in terraform/."""
    found = []
    for path in sorted(TERRAFORM.glob("*.tf")):
        for line in path.read_text().splitlines():
            if match := _SKIP.search(line):
                found.append((path.name, match["check"], (match["reason"] or "").strip()))
    return found


class TestCheckov:
    def test_no_failed_check(self, report: dict[str, Any]) -> None:
        """Every check that applies passes or is skipped; the files parsed."""
        summary = report["summary"]
        failed = [
            f"{c['check_id']} {c['resource']}: {c['check_name']}"
            for c in report["results"].get("failed_checks", [])
        ]
        assert summary["failed"] == 0, "\n".join(failed)
        assert summary["parsing_errors"] == 0
        assert summary["resource_count"] >= 20
        assert summary["passed"] > 0

    def test_every_skip_has_a_reason(self, report: dict[str, Any]) -> None:
        """Each skipped check carries an inline justification of a real sentence."""
        for check in report["results"].get("skipped_checks", []):
            reason = check["check_result"].get("suppress_comment") or ""
            assert len(reason.split()) >= 5, (check["check_id"], check["resource"], reason)

    def test_no_stale_skip(self, report: dict[str, Any]) -> None:
        """Each `#checkov:skip=` in terraform/ silences a check that would otherwise run."""
        skipped = {check["check_id"] for check in report["results"].get("skipped_checks", [])}
        for file, check, reason in inline_skips():
            assert check in skipped, f"{file}: skip of {check} silences nothing"
            assert reason, f"{file}: skip of {check} has no reason"


def test_checkov_venv_is_separate() -> None:
    """checkov is not installed into .venv (it would replace the project's python-hcl2)."""
    project_bin = Path(ROOT / ".venv" / "bin")
    assert not (project_bin / "checkov").exists()
