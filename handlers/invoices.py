"""`invoice.*` events keep `invoices/{invoice.id}` current.

The invoice's subscription is `invoice.subscription` up to 2025-02-24.acacia and
`invoice.parent.subscription_details.subscription` from 2025-03-31.basil; both are read.
`invoice.upcoming` carries no invoice ID (the invoice does not exist yet), so it is ignored.
`invoice.overpaid` (a payment above `amount_due`: `amount_paid` changes),
`invoice.finalization_failed` and `invoice.payment_attempt_required` follow a change of the
invoice and are projected. `invoice.sent`, `invoice.overdue` and `invoice.will_be_due` are
not: they report an e-mail or the passing of a due date, change no field of the invoice, and
would only cost a write (docs/projections.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers._projection import Projection, counters, lifecycle, reference, register_projection

__all__ = ["INVOICES", "invoice_fields"]


def _subscription(obj: Mapping[str, Any]) -> str | None:
    if (subscription := reference(obj.get("subscription"))) is not None:
        return subscription
    parent = obj.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    return reference(details.get("subscription")) if isinstance(details, Mapping) else None


def invoice_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The projected fields of an invoice, from any API version's shape."""
    return {
        "status": obj.get("status"),
        "customer": reference(obj.get("customer")),
        "customer_account": reference(obj.get("customer_account")),
        "subscription": _subscription(obj),
        "amount_due": obj.get("amount_due"),
        "amount_paid": obj.get("amount_paid"),
        "currency": obj.get("currency"),
        "hosted_invoice_url": obj.get("hosted_invoice_url"),
    }


INVOICES = Projection(
    collection="invoices",
    fields=invoice_fields,
    ranks=(
        # An uncollectible invoice can still be paid or voided; paid and void are final.
        lifecycle("draft", "open", "uncollectible", ("paid", "void")),
        counters("amount_paid", "attempt_count"),
    ),
    deleting=frozenset({"invoice.deleted"}),
)

register_projection(
    INVOICES,
    "invoice.created",
    "invoice.updated",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.marked_uncollectible",
    "invoice.voided",
    "invoice.deleted",
    "invoice.overpaid",
    "invoice.finalization_failed",
    "invoice.payment_attempt_required",
    family=("invoice", "invoice.updated"),
)
