"""`customer.subscription.*` events keep `subscriptions/{subscription.id}` current.

Subscriptions changed shape across API versions, and both shapes are read:
- the billing period is on the subscription up to 2025-02-24.acacia, and on each of its items
  from 2025-03-31.basil; with items whose periods differ, the period is Stripe's own for the
  subscription (what its list filters match): the latest item start and the earliest item end,
  the span in which every item is in its current period, ending at the next renewal of any;
- prices are `items.data[].price`, or `items.data[].plan` (or a top-level `plan`) in old
  versions;
- `quantity` is top-level in old versions; otherwise the quantity of the only item, or null.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers._projection import Projection, lifecycle, reference, register_projection

__all__ = ["SUBSCRIPTIONS", "product_ids", "products", "subscription_fields"]


def _items(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = obj.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


def _price_ids(obj: Mapping[str, Any]) -> list[str]:
    ids = [reference(item.get("price")) or reference(item.get("plan")) for item in _items(obj)]
    if not _items(obj):  # API versions before subscription items had one top-level plan
        ids = [reference(obj.get("plan"))]
    return [price for price in ids if price is not None]


def products(obj: Mapping[str, Any]) -> list[Any]:
    """The `product` of each item's price (or plan, or the top-level plan of old versions):
    an ID, or the product itself where it was expanded."""
    prices = [item.get("price") or item.get("plan") for item in _items(obj)]
    if not _items(obj):
        prices = [obj.get("plan")]
    return [price.get("product") for price in prices if isinstance(price, Mapping)]


def product_ids(obj: Mapping[str, Any]) -> list[str]:
    """The IDs of the subscription's products, in item order."""
    ids = [reference(product) for product in products(obj)]
    return [product for product in ids if product is not None]


def _quantity(obj: Mapping[str, Any]) -> Any:
    if obj.get("quantity") is not None:
        return obj["quantity"]
    items = _items(obj)
    return items[0].get("quantity") if len(items) == 1 else None


def _period(obj: Mapping[str, Any], key: str) -> Any:
    if obj.get(key) is not None:
        return obj[key]
    values = [item[key] for item in _items(obj) if isinstance(item.get(key), int)]
    if not values:
        return None
    return max(values) if key == "current_period_start" else min(values)


def subscription_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The projected fields of a subscription, from any API version's shape."""
    return {
        "status": obj.get("status"),
        "customer": reference(obj.get("customer")),
        "customer_account": reference(obj.get("customer_account")),
        "price_ids": _price_ids(obj),
        "quantity": _quantity(obj),
        "current_period_start": _period(obj, "current_period_start"),
        "current_period_end": _period(obj, "current_period_end"),
        "cancel_at_period_end": obj.get("cancel_at_period_end"),
        "cancel_at": obj.get("cancel_at"),
        "canceled_at": obj.get("canceled_at"),
        "trial_end": obj.get("trial_end"),
    }


SUBSCRIPTIONS = Projection(
    collection="subscriptions",
    fields=subscription_fields,
    ranks=(
        lifecycle(
            "incomplete",
            "trialing",
            "active",
            ("past_due", "unpaid", "paused"),
            ("canceled", "incomplete_expired"),
        ),
    ),
    deleting=frozenset({"customer.subscription.deleted"}),
)

register_projection(
    SUBSCRIPTIONS,
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "customer.subscription.trial_will_end",
    family=("subscription", "customer.subscription.updated"),
)
