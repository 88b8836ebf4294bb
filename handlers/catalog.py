"""`product.*` and `price.*` events keep `products/{id}` and `prices/{id}` current.

Products and prices have no lifecycle (`active` goes both ways), so events of one second are
ordered by event ID alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers._projection import Projection, reference, register_projection

__all__ = ["PRICES", "PRODUCTS", "price_fields"]


def price_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The projected fields of a price; `recurring_interval` is `recurring.interval`."""
    recurring = obj.get("recurring")
    return {
        "product": reference(obj.get("product")),
        "unit_amount": obj.get("unit_amount"),
        "currency": obj.get("currency"),
        "active": obj.get("active"),
        "type": obj.get("type"),
        "recurring_interval": (
            recurring.get("interval") if isinstance(recurring, Mapping) else None
        ),
    }


PRODUCTS = Projection(
    collection="products",
    fields=lambda obj: {"name": obj.get("name"), "active": obj.get("active")},
    deleting=frozenset({"product.deleted"}),
)

PRICES = Projection(
    collection="prices",
    fields=price_fields,
    deleting=frozenset({"price.deleted"}),
)

register_projection(PRODUCTS, "product.*", family=("product", "product.updated"))
register_projection(PRICES, "price.*", family=("price", "price.updated"))
