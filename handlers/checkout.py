"""`checkout.session.*` events keep `checkout_sessions/{session.id}` current."""

from handlers._projection import Projection, lifecycle, reference, register_projection

__all__ = ["CHECKOUT_SESSIONS"]

CHECKOUT_SESSIONS = Projection(
    collection="checkout_sessions",
    fields=lambda obj: {
        "status": obj.get("status"),
        "payment_status": obj.get("payment_status"),
        "mode": obj.get("mode"),
        "customer": reference(obj.get("customer")),
        "customer_account": reference(obj.get("customer_account")),
        "subscription": reference(obj.get("subscription")),
        "payment_intent": reference(obj.get("payment_intent")),
    },
    ranks=(
        lifecycle("open", ("complete", "expired")),
        lifecycle("unpaid", ("paid", "no_payment_required"), key="payment_status"),
    ),
)

register_projection(
    CHECKOUT_SESSIONS,
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    family=("checkout.session", "checkout.session.completed"),
)
