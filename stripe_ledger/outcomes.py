"""How a delivery ended, as far as the ledger is concerned."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Delivery", "Outcome"]


class Outcome(enum.Enum):
    """The result of one delivery; `stripe_ledger.http` maps each to an HTTP status."""

    COMPLETED = "completed"  # handlers ran and committed with the ledger record
    IGNORED = "ignored"  # recorded; no handler is registered for the type
    DUPLICATE = "duplicate"  # already completed, ignored or dead: nothing ran
    FAILED = "failed"  # a handler raised: recorded, Stripe should retry
    DEAD = "dead"  # failed for the last allowed time: recorded, Stripe should stop
    IN_FLIGHT = "in_flight"  # another delivery holds the event: Stripe should retry
    CONTENDED = "contended"  # other events kept changing what it edits: nothing applied, retry


@dataclass(frozen=True)
class Delivery:
    """What happened to one delivery of one event."""

    outcome: Outcome
    event_id: str
    event_type: str
    attempt: int | None = None
    error: str | None = None
    retry_after: int | None = None
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    """What a handler raised, for the traceback in the log line (never in a response)."""
