"""`payment_intent.*` events keep `payments/{payment_intent.id}` current."""

from handlers._projection import Projection, counters, lifecycle, reference, register_projection

__all__ = ["PAYMENTS"]

PAYMENTS = Projection(
    collection="payments",
    fields=lambda obj: {
        "status": obj.get("status"),
        "amount": obj.get("amount"),
        "amount_received": obj.get("amount_received"),
        "currency": obj.get("currency"),
        "customer": reference(obj.get("customer")),
        "customer_account": reference(obj.get("customer_account")),
    },
    ranks=(
        lifecycle(
            "requires_payment_method",
            "requires_confirmation",
            "requires_action",
            "processing",
            "requires_capture",
            ("succeeded", "canceled"),
        ),
        counters("amount_received"),
    ),
)

register_projection(
    PAYMENTS, "payment_intent.*", family=("payment_intent", "payment_intent.updated")
)
