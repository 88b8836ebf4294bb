"""The bundle is deployable as it is: what Cloud Functions would build from it serves the
user's own handler, with the third-party package it imports.

A project with a user package (`myapp.billing`, importing `humanize`, which this project does
not depend on) and a `requirements-handlers.in` naming it is bundled for real (uv resolves
against the package index). The bundle's requirements.txt is installed with pip into a fresh
virtual environment, hashes required, as Cloud Build does; the unzipped bundle is served
from a directory outside the repository by that environment's functions-framework, against
the emulator; a signed event is applied by the user's handler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest
import requests
from google.cloud import firestore
from test_utils.system import EmulatorCreds

from stripe_ledger import bundle
from stripe_ledger.emulator import free_port
from tests.support import SECRET, make_event, sign
from tests.test_deploy_bundle import make_project

pytestmark = [pytest.mark.e2e, pytest.mark.emulator]

BILLING = '''\
"""A user's handler module, outside handlers/, with a dependency of its own."""

import humanize

from handlers import on


@on("test.bundle")
def record_size(ctx) -> None:
    ref = ctx.db.collection("bundle_sizes").document(ctx.object["id"])
    ctx.tx.set(ref, {"size": humanize.naturalsize(ctx.object["bytes"])})
'''


def _serve(source: Path, python_bin: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    port = int(env["PORT"])
    process = subprocess.Popen(
        [
            str(python_bin / "functions-framework"),
            "--target=stripe_webhook",
            "--source=main.py",
            "--host=127.0.0.1",
            f"--port={port}",
        ],
        cwd=source,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"the bundle's function exited:\n{output}")
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
            return process
        except requests.ConnectionError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError("the bundle's function did not answer within 60 s")


def test_bundle_serves_the_users_handler_with_its_dependency(
    tmp_path: Path, emulator_host: str, project: str
) -> None:
    """Bundle, install with hashes into a fresh venv, serve unzipped, deliver, read back."""
    root = make_project(tmp_path / "project")
    (root / "myapp" / "billing.py").write_text(BILLING)
    (root / bundle.EXTRA_REQUIREMENTS).write_text("humanize>=4\n")
    built = bundle.build(["myapp.billing"], root)

    source = tmp_path / "source"
    with zipfile.ZipFile(built.zip_path) as archive:
        archive.extractall(source)
    requirements = (source / "requirements.txt").read_text()
    assert "humanize==" in requirements
    assert "--hash=sha256:" in requirements
    assert not (source / bundle.EXTRA_REQUIREMENTS).exists()

    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python_bin = environment / "bin"
    install = subprocess.run(
        [
            str(python_bin / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--require-hashes",
            "-r",
            "requirements.txt",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        # As Cloud Build: the bundle's file alone (this machine's pip constraints dropped).
        env={**os.environ, "PIP_CONSTRAINT": ""},
    )
    assert install.returncode == 0, install.stderr[-3000:]
    installed = subprocess.run(
        [str(python_bin / "python"), "-c", "import humanize, stripe_ledger"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "No module named 'stripe_ledger'" in installed.stderr, "only the zip has the core"

    port = free_port()
    env = {
        "PATH": f"{python_bin}:/usr/bin:/bin",
        "PORT": str(port),
        "FIRESTORE_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": project,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_HANDLER_MODULES": "myapp.billing",
        "PYTHONUNBUFFERED": "1",
    }
    process = _serve(source, python_bin, env)
    try:
        event = make_event("test.bundle", {"id": "obj_bundle1", "bytes": 3_000_000})
        payload = json.dumps(event)
        response = requests.post(
            f"http://127.0.0.1:{port}/",
            data=payload,
            headers={"Stripe-Signature": sign(payload), "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "completed"
    finally:
        os.killpg(process.pid, 9)
        process.wait(10)

    db = firestore.Client(project=project, credentials=EmulatorCreds())
    snapshot = db.collection("bundle_sizes").document("obj_bundle1").get()
    assert snapshot.to_dict() == {"size": "3.0 MB"}
    assert sys.executable not in str(python_bin)
