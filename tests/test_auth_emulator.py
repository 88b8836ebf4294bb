"""The Auth emulator harness works: firebase-admin sets and reads custom claims through it."""

from __future__ import annotations

import os

import firebase_admin
import pytest
from firebase_admin import auth

pytestmark = pytest.mark.auth_emulator


def test_fixture_points_firebase_admin_at_the_emulator(auth_emulator: str) -> None:
    assert os.environ["FIREBASE_AUTH_EMULATOR_HOST"] == auth_emulator


def test_custom_claims_are_set_and_read_back(auth_app: firebase_admin.App) -> None:
    auth.create_user(uid="customer-1", app=auth_app)
    auth.set_custom_user_claims("customer-1", {"plan": "pro", "seats": 3}, app=auth_app)
    assert auth.get_user("customer-1", app=auth_app).custom_claims == {"plan": "pro", "seats": 3}

    auth.set_custom_user_claims("customer-1", None, app=auth_app)
    assert auth.get_user("customer-1", app=auth_app).custom_claims is None


def test_claims_on_an_unknown_uid_raise_user_not_found(auth_app: firebase_admin.App) -> None:
    """set_custom_user_claims never creates the user: it must exist first."""
    with pytest.raises(auth.UserNotFoundError):
        auth.set_custom_user_claims("nobody", {"plan": "pro"}, app=auth_app)


def test_each_test_has_a_project_of_its_own(auth_app: firebase_admin.App) -> None:
    """The previous tests' users are not here: the emulator keeps projects apart."""
    with pytest.raises(auth.UserNotFoundError):
        auth.get_user("customer-1", app=auth_app)
