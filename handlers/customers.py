"""`customer.created/updated/deleted` keep `customers/{customer.id}` current."""

from handlers._projection import Projection, register_projection

__all__ = ["CUSTOMERS"]

CUSTOMERS = Projection(
    collection="customers",
    fields=lambda obj: {
        "email": obj.get("email"),
        "name": obj.get("name"),
        "phone": obj.get("phone"),
        "metadata": obj.get("metadata"),
    },
    # A customer has no status: events of one second are ordered by event ID alone.
    deleting=frozenset({"customer.deleted"}),
)

register_projection(
    CUSTOMERS,
    "customer.created",
    "customer.updated",
    "customer.deleted",
    family=("customer", "customer.updated"),
)
