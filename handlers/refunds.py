"""`refund.*` and `charge.refund.updated` keep `refunds/{refund.id}` current."""

from handlers._projection import Projection, lifecycle, reference, register_projection

__all__ = ["REFUNDS"]

REFUNDS = Projection(
    collection="refunds",
    fields=lambda obj: {
        "status": obj.get("status"),
        "amount": obj.get("amount"),
        "charge": reference(obj.get("charge")),
        "payment_intent": reference(obj.get("payment_intent")),
        "customer_account": reference(obj.get("customer_account")),
    },
    # A refund that succeeded can still fail later (the bank returns it).
    ranks=(lifecycle(("pending", "requires_action"), "succeeded", ("failed", "canceled")),),
)

register_projection(
    REFUNDS,
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
    family=("refund", "refund.updated"),
)
