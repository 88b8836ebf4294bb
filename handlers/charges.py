"""`charge.*` events about the charge itself keep `charges/{charge.id}` current.

Its refunds and disputes (`charge.refund.updated`, `charge.dispute.*`) have their own
projections (`handlers.refunds`, `handlers.disputes`).
"""

from handlers._projection import Projection, counters, lifecycle, reference, register_projection

__all__ = ["CHARGES"]

CHARGES = Projection(
    collection="charges",
    fields=lambda obj: {
        "status": obj.get("status"),
        "amount": obj.get("amount"),
        "amount_refunded": obj.get("amount_refunded"),
        "refunded": obj.get("refunded"),
        "payment_intent": reference(obj.get("payment_intent")),
        "customer": reference(obj.get("customer")),
    },
    ranks=(
        lifecycle("pending", ("succeeded", "failed")),
        counters("captured", "amount_refunded"),
    ),
)

register_projection(
    CHARGES,
    "charge.succeeded",
    "charge.failed",
    "charge.pending",
    "charge.captured",
    "charge.refunded",
    "charge.updated",
    "charge.expired",
    family=("charge", "charge.updated"),
)
