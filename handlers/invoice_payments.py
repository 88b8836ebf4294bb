"""`invoice_payment.*` events keep `invoice_payments/{invoice_payment.id}` current.

From 2025-03-31.basil invoices no longer name their payment intent or charge (nor do those
name the invoice): an invoice payment is the only link between an invoice and what paid it,
`payment.payment_intent` or `payment.charge` (`payment.type` says which). An invoice can
have several (partial payments, a retried one); `is_default` marks the one its
`amount_paid` is reported through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers._projection import Projection, lifecycle, reference, register_projection

__all__ = ["INVOICE_PAYMENTS", "invoice_payment_fields"]


def invoice_payment_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The projected fields of an invoice payment."""
    payment = obj.get("payment")
    payment = payment if isinstance(payment, Mapping) else {}
    return {
        "invoice": reference(obj.get("invoice")),
        "payment_intent": reference(payment.get("payment_intent")),
        "charge": reference(payment.get("charge")),
        "amount_paid": obj.get("amount_paid"),
        "amount_requested": obj.get("amount_requested"),
        "currency": obj.get("currency"),
        "status": obj.get("status"),
        "is_default": obj.get("is_default"),
    }


INVOICE_PAYMENTS = Projection(
    collection="invoice_payments",
    fields=invoice_payment_fields,
    ranks=(lifecycle("open", ("paid", "canceled")),),
)

register_projection(
    INVOICE_PAYMENTS,
    "invoice_payment.*",
    family=("invoice_payment", "invoice_payment.paid"),
)
