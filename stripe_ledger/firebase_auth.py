"""Firebase Auth, through `firebase-admin`: the one module that talks to it.

Used by the outbox to mirror a user's access into a custom claim (STRIPE_CUSTOM_CLAIMS). In
production `firebase-admin` authenticates as the function's service account (Application
Default Credentials; it needs `roles/firebaseauth.admin`); with FIREBASE_AUTH_EMULATOR_HOST
set, it talks to the Auth emulator and needs no credentials. `firebase-admin` is imported
only when a claim is set, so a function that never sets one never loads it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import firebase_admin

__all__ = ["AuthUnavailable", "set_claim"]

_lock = threading.Lock()
_apps: dict[str, firebase_admin.App] = {}


class AuthUnavailable(RuntimeError):
    """Firebase Auth could not be reached or refused the call for now; try again later."""


def _app(project: str) -> firebase_admin.App:
    """One `firebase_admin` app per project, created on first use."""
    import firebase_admin

    with _lock:
        app = _apps.get(project)
        if app is None:
            app = firebase_admin.initialize_app(
                options={"projectId": project}, name=f"stripe-ledger:{project}"
            )
            _apps[project] = app
        return app


def set_claim(project: str, uid: str, name: str, value: Mapping[str, Any]) -> bool:
    """Set the custom claim `name` of Firebase Auth user `uid` to `value`, keeping the user's
    other claims; whether the user exists (False: nothing was set).

    Raises `AuthUnavailable` when Firebase Auth is unreachable or refuses for now, and
    `ValueError` when the claims would exceed Firebase's 1,000 characters.
    """
    from firebase_admin import auth, exceptions

    app = _app(project)
    try:
        user = auth.get_user(uid, app=app)
        claims = dict(user.custom_claims or {})
        if claims.get(name) == dict(value):
            return True
        claims[name] = dict(value)
        auth.set_custom_user_claims(uid, claims, app=app)
    except auth.UserNotFoundError:
        return False
    except (exceptions.UnavailableError, exceptions.DeadlineExceededError) as error:
        raise AuthUnavailable(f"Firebase Auth unavailable: {type(error).__name__}") from error
    return True
