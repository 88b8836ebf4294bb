"""`charge.dispute.*` events keep `disputes/{dispute.id}` current."""

from handlers._projection import Projection, lifecycle, reference, register_projection

__all__ = ["DISPUTES"]

DISPUTES = Projection(
    collection="disputes",
    fields=lambda obj: {
        "status": obj.get("status"),
        "amount": obj.get("amount"),
        "charge": reference(obj.get("charge")),
        "reason": obj.get("reason"),
    },
    # An inquiry (warning_*) may escalate into a chargeback (needs_response onwards).
    ranks=(
        lifecycle(
            "warning_needs_response",
            "warning_under_review",
            "needs_response",
            "under_review",
            ("warning_closed", "won", "lost", "prevented"),
        ),
    ),
)

register_projection(DISPUTES, "charge.dispute.*", family=("dispute", "charge.dispute.updated"))
