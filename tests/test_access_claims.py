"""STRIPE_CUSTOM_CLAIMS: the outbox mirrors each user's access into Firebase Auth custom
claims, against the Firebase Auth emulator (firebase-tools) and the Firestore emulator, with
the function served by functions-framework over real HTTP."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import firebase_admin
import pytest
from firebase_admin import auth
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from test_utils.system import EmulatorCreds

from handlers.access import CLAIMS_TASK, set_custom_claims
from stripe_ledger.outbox import TaskRun
from tests.support import SECRET, FunctionServer
from tests.test_access import T0, Function, Life

pytestmark = [pytest.mark.emulator, pytest.mark.e2e, pytest.mark.auth_emulator]


@pytest.fixture(scope="module")
def project(auth_emulator: str, emulator_host: str) -> str:
    """One project for Firestore and Firebase Auth: the function's."""
    return f"demo-claims-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def app(project: str) -> Iterator[firebase_admin.App]:
    app = firebase_admin.initialize_app(options={"projectId": project}, name=project)
    try:
        yield app
    finally:
        firebase_admin.delete_app(app)


@pytest.fixture(scope="module")
def function(project: str, auth_emulator: str) -> Iterator[Function]:
    server = FunctionServer(
        {
            "GOOGLE_CLOUD_PROJECT": project,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "STRIPE_CUSTOM_CLAIMS": "true",
            "FIREBASE_AUTH_EMULATOR_HOST": auth_emulator,
        }
    ).start()
    try:
        yield Function(server, firestore.Client(project=project, credentials=EmulatorCreds()))
    finally:
        server.stop()


def claims_of(app: firebase_admin.App, uid: str) -> dict[str, Any]:
    return dict(auth.get_user(uid, app=app).custom_claims or {})


def wait_for_claim(app: firebase_admin.App, uid: str, expected: dict[str, Any]) -> None:
    """The tasks run right after the commit, in the request: poll briefly for them."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if claims_of(app, uid).get("stripe") == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"claims of {uid}: {claims_of(app, uid)}, expected stripe={expected}")


class TestCustomClaims:
    def test_the_claim_follows_the_access(
        self, function: Function, app: firebase_admin.App
    ) -> None:
        """A user with a claim of their own: subscribing sets `stripe`, an entitlement
        summary changes its features, the cancellation clears `active`; the user's own
        claim is kept throughout."""
        life = Life()
        auth.create_user(uid=life.user, app=app)
        auth.set_custom_user_claims(life.user, {"role": "editor"}, app=app)
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.subscription_event("created", "one", "active", T0 + 10),
        )
        wait_for_claim(app, life.user, {"active": True, "features": []})
        function.deliver(life.entitlements_event(T0 + 20, "export", "seats"))
        wait_for_claim(app, life.user, {"active": True, "features": ["export", "seats"]})
        function.deliver(life.subscription_event("deleted", "one", "canceled", T0 + 30))
        wait_for_claim(app, life.user, {"active": False, "features": ["export", "seats"]})
        assert claims_of(app, life.user)["role"] == "editor"
        mine = FieldFilter("payload.app_user_id", "==", life.user)
        tasks = function.db.collection("stripe_tasks").where(filter=mine).stream()
        assert {task.get("status") for task in tasks} == {"done"}

    def test_racing_tasks_end_at_the_newest_state(
        self, function: Function, app: firebase_admin.App
    ) -> None:
        """Tasks enqueued for older states, run late and all at once: each sets what the
        document holds when it runs, so the claim ends at the newest state."""
        life = Life()
        auth.create_user(uid=life.user, app=app)
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.subscription_event("created", "one", "active", T0 + 10),
            life.entitlements_event(T0 + 20, "export"),
        )
        wait_for_claim(app, life.user, {"active": True, "features": ["export"]})
        auth.set_custom_user_claims(life.user, {"stripe": {"active": False}}, app=app)  # stale
        runs = [
            TaskRun(CLAIMS_TASK, f"late-{n}", {"app_user_id": life.user}, None, 1, db=function.db)
            for n in range(6)
        ]
        threads = [threading.Thread(target=set_custom_claims, args=(run,)) for run in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert claims_of(app, life.user)["stripe"] == {"active": True, "features": ["export"]}

    def test_an_app_user_unknown_to_firebase_auth_is_left_alone(
        self, function: Function, app: firebase_admin.App
    ) -> None:
        """The task is done (a WARNING says why nothing was set); the access is kept."""
        life = Life()
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.subscription_event("created", "one", "active", T0 + 10),
        )
        assert function.user(life.user)["active"] is True
        with pytest.raises(auth.UserNotFoundError):
            auth.get_user(life.user, app=app)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            statuses = {
                task.get("status")
                for task in function.db.collection("stripe_tasks").stream()
                if task.get("payload") == {"app_user_id": life.user}
            }
            if statuses == {"done"}:
                break
            time.sleep(0.1)
        assert statuses == {"done"}
        assert any(
            "no Firebase Auth user" in entry.get("message", "")
            for entry in function.server.log_entries()
        )
