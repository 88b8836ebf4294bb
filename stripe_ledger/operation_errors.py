"""The errors an operations command ends in; `stripe_ledger.cli` maps each to an exit status.

Kept apart from the modules that need Firestore, so that `stripe-ledger --help` and argument
errors answer without importing the client libraries.
"""

from __future__ import annotations

__all__ = ["OperationFailed", "OperationsError", "UsageError"]


class OperationsError(Exception):
    """Base of the errors an operation ends in; the message is one line for the operator."""


class UsageError(OperationsError):
    """An argument is malformed or out of range (exit status 2)."""


class OperationFailed(OperationsError):
    """The operation could not be carried out (exit status 1)."""
