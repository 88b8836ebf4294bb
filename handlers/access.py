"""Who may use what, right now: `customer_access/{customer}` and `user_access/{app user}`.

An app asks "may this user use this feature now?". The answer is kept in the same
transaction as the event that changes it, derived from the projections' state (each
subscription's entry is the `subscriptions` projection's state after the event, so it follows
the projection's ordering rule and is never regressed by a late or duplicate event), from:

- the customer's subscriptions: `active` is true while any of them is in a status of
  STRIPE_ACCESS_STATUSES (`active`, `trialing`; add `past_due` for a grace period) and the
  customer is not deleted;
- features: the `lookup_key`s of the customer's last
  `entitlements.active_entitlement_summary.updated` (Stripe's full list), or, for a customer
  Stripe never sent one, the product metadata STRIPE_FEATURES_KEY (comma-separated) of the
  products of its granting subscriptions, as projected in `products` when the subscription's
  event is applied;
- the link to the app's user: the customer's `metadata[STRIPE_APP_USER_KEY]` in its
  projected state when set, else the `client_reference_id` of its latest completed Checkout
  Session (by `created`, then session ID). Changing the metadata moves the customer's access
  to the new user; removing it unlinks the customer unless a Checkout Session links it.

A customer's document exists linked or not, so an unlinked customer's events are kept and
its access appears under its user the moment the link does. A user's document aggregates
every customer linked to it. Computing from the stored entries, never from the event alone,
makes the documents the same in every delivery order. Only `updated_at` (the server's time of
the last change) is not part of that.

One module, one job: the access view, from its inputs (the followers of three projections and
the entitlement handler) through its computation to its one outside effect (the custom-claims
executor), so that every rule of "who may use what" is read in one place.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from google.cloud import firestore

from handlers import on, task
from handlers._projection import Follower, document_id, reference
from handlers.checkout import CHECKOUT_SESSIONS
from handlers.customers import CUSTOMERS
from handlers.subscriptions import SUBSCRIPTIONS, product_ids, products
from stripe_ledger.context import HandlerContext
from stripe_ledger.firestore_client import translated
from stripe_ledger.logs import log
from stripe_ledger.verify import VerifiedEvent

if TYPE_CHECKING:
    from stripe_ledger.outbox import TaskRun

__all__ = ["CUSTOMER_ACCESS", "USER_ACCESS", "access_collections", "stored_access"]

CUSTOMER_ACCESS = "customer_access"
USER_ACCESS = "user_access"
ENTITLEMENT_SUMMARY = "entitlements.active_entitlement_summary.updated"
CLAIMS_TASK = "stripe.custom_claims"
CLAIM = "stripe"
"""The custom claim a user's access is mirrored into: `{"active": ..., "features": [...]}`."""
_CLAIM_ROUNDS = 3

_ENTRY_FIELDS = ("status", "price_ids", "current_period_end", "cancel_at_period_end")


def access_collections() -> tuple[str, str]:
    """The collections this module keeps (the deployment exempts and locks them)."""
    return CUSTOMER_ACCESS, USER_ACCESS


def stored_access(
    db: firestore.Client, *, user: str | None = None, customer: str | None = None
) -> dict[str, Any] | None:
    """`user_access/{user}` (or `customer_access/{customer}`) as stored, or None. Raises
    `LedgerUnavailable` when Firestore is unavailable, `ValueError` for an ID Firestore
    cannot hold."""
    collection, key = (USER_ACCESS, user) if user is not None else (CUSTOMER_ACCESS, customer)
    if document_id(key) is None:
        raise ValueError(f"{key!r} cannot be a document ID")
    with translated(f"read {collection}"):
        return db.collection(collection).document(str(key)).get().to_dict()


def _owner(obj: Mapping[str, Any]) -> str | None:
    """The customer an object belongs to: its `customer` (or, for an Accounts v2 customer,
    its `customer_account`)."""
    return document_id(reference(obj.get("customer")) or reference(obj.get("customer_account")))


def _customer_ref(ctx: HandlerContext, customer: str) -> firestore.DocumentReference:
    return ctx.db.collection(CUSTOMER_ACCESS).document(customer)


def _user_ref(ctx: HandlerContext, user: str) -> firestore.DocumentReference:
    return ctx.db.collection(USER_ACCESS).document(user)


def _metadata_user(metadata: Any, key: str) -> str | None:
    return document_id(metadata.get(key)) if isinstance(metadata, Mapping) else None


def _access_edits(
    ctx: HandlerContext, customer: str | None, named: Iterable[str | None] = ()
) -> list[firestore.DocumentReference]:
    """The customer's access, then (once it is read) the users it names and the users
    `named` by the event, whom the event may link the customer to."""
    if customer is None:
        return []
    ref = _customer_ref(ctx, customer)
    users = set(named)
    snapshot = ctx.cached(ref)
    stored = (snapshot.to_dict() if snapshot is not None else None) or {}
    link = stored.get("link") or {}
    users |= {
        stored.get("app_user_id"),
        link.get("metadata"),
        (link.get("checkout") or {}).get("user"),
    }
    return [ref, *(_user_ref(ctx, user) for user in sorted(u for u in users if isinstance(u, str)))]


def _subscription_edits(ctx: HandlerContext) -> list[firestore.DocumentReference]:
    products = [
        ctx.db.collection("products").document(product)
        for product in product_ids(ctx.object)
        if document_id(product) is not None
    ]
    return _access_edits(ctx, _owner(ctx.object)) + products


def _customer_edits(ctx: HandlerContext) -> list[firestore.DocumentReference]:
    key = ctx.settings.app_user_key
    named = [_metadata_user(ctx.object.get("metadata"), key)]
    projected = ctx.cached(CUSTOMERS.ref(ctx))  # the state kept when the event comes late
    if projected is not None and projected.exists:
        named.append(_metadata_user((projected.to_dict() or {}).get("metadata"), key))
    return _access_edits(ctx, document_id(ctx.received.object_id), named)


def _checkout_edits(ctx: HandlerContext) -> list[firestore.DocumentReference]:
    named = document_id(ctx.object.get("client_reference_id"))
    return _access_edits(ctx, _owner(ctx.object), [named])


def _entitlement_edits(ctx: HandlerContext) -> list[firestore.DocumentReference]:
    return _access_edits(ctx, _owner(ctx.object))


def _features(value: Any) -> list[str]:
    if not isinstance(value, str):
        return []
    return sorted({part.strip() for part in value.split(",") if part.strip()})


def _product_features(ctx: HandlerContext, obj: Mapping[str, Any]) -> list[str]:
    """The features the subscription's products list in their metadata (an expanded product's
    own, else its projection's)."""
    key = ctx.settings.features_key
    found: set[str] = set()
    for product in products(obj):
        if isinstance(product, Mapping):
            found.update(_features((product.get("metadata") or {}).get(key)))
            continue
        if document_id(product) is None:
            continue
        snapshot = ctx.cached(ctx.db.collection("products").document(product))
        stored = snapshot.to_dict() if snapshot is not None else None
        projected = (stored or {}).get("object") or {}
        found.update(_features((projected.get("metadata") or {}).get(key)))
    return sorted(found)


def _object(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The Stripe object a projection document holds."""
    obj = state.get("object")
    return obj if isinstance(obj, Mapping) else {}


def _entry(ctx: HandlerContext, state: Mapping[str, Any]) -> dict[str, Any]:
    """A subscription's entry in its customer's access: its projected state."""
    obj = _object(state)
    entry = {name: state.get(name) for name in _ENTRY_FIELDS}
    entry["price_ids"] = list(entry["price_ids"] or [])
    entry |= {
        "product_ids": sorted(set(product_ids(obj))),
        "product_features": _product_features(ctx, obj),
        "deleted": state.get("deleted") is True,
    }
    return entry


def _follow_subscription(ctx: HandlerContext, state: Mapping[str, Any]) -> None:
    customer = _owner(ctx.object)  # the event's own: what its reads declared
    subscription = document_id(ctx.received.object_id)
    if customer is None or subscription is None:
        return
    access = ctx.edit(_customer_ref(ctx, customer))
    subscriptions = dict(access.get("subscriptions") or {})
    subscriptions[subscription] = _entry(ctx, state)
    access["subscriptions"] = subscriptions
    _settle(ctx, customer, access)


def _follow_customer(ctx: HandlerContext, state: Mapping[str, Any]) -> None:
    customer = document_id(ctx.received.object_id)
    if customer is None:
        return
    access = ctx.edit(_customer_ref(ctx, customer))
    link = dict(access.get("link") or {})
    link["metadata"] = _metadata_user(state.get("metadata"), ctx.settings.app_user_key)
    access["link"] = link
    access["deleted"] = state.get("deleted") is True
    _settle(ctx, customer, access)


def _follow_checkout(ctx: HandlerContext, state: Mapping[str, Any]) -> None:
    obj = _object(state)
    customer = _owner(ctx.object)
    user = document_id(obj.get("client_reference_id"))
    if customer is None or user is None or state.get("status") != "complete":
        return
    created = obj.get("created") if isinstance(obj.get("created"), int) else 0
    session = {"user": user, "session": str(ctx.received.object_id), "created": created}
    access = ctx.edit(_customer_ref(ctx, customer))
    link = dict(access.get("link") or {})
    stored = link.get("checkout")
    if stored is None or (created, session["session"]) > (
        stored.get("created") or 0,
        str(stored.get("session") or ""),
    ):
        link["checkout"] = session
    access["link"] = link
    _settle(ctx, customer, access)


def _has_customer(received: VerifiedEvent) -> bool:
    return _owner(received.object) is not None


@on(ENTITLEMENT_SUMMARY, edits=_entitlement_edits, when=_has_customer)
def record_entitlements(ctx: HandlerContext) -> None:
    """Keep the customer's features: the summary carries its full list of active
    entitlements; a summary older than the stored one (by `created`, then event ID) changes
    nothing."""
    customer = _owner(ctx.object)
    if customer is None:
        return
    access = ctx.edit(_customer_ref(ctx, customer))
    stored = access.get("entitlements") or {}
    order = (ctx.received.created, ctx.received.id)
    if order <= (stored.get("last_event_created") or 0, str(stored.get("last_event_id") or "")):
        return
    listed = (ctx.object.get("entitlements") or {}).get("data") or []
    keys = {item.get("lookup_key") for item in listed if isinstance(item, Mapping)}
    access["entitlements"] = {
        "features": sorted(key for key in keys if isinstance(key, str)),
        "last_event_id": ctx.received.id,
        "last_event_created": ctx.received.created,
    }
    _settle(ctx, customer, access)


def _granting(entry: Mapping[str, Any], statuses: tuple[str, ...]) -> bool:
    return str(entry.get("status")) in statuses and not entry.get("deleted")


def _summary(
    subscriptions: Mapping[str, Mapping[str, Any]],
    features: Iterable[str],
    statuses: tuple[str, ...],
) -> dict[str, Any]:
    """What an app reads, from a set of subscription entries and the features granted."""
    granting = [entry for entry in subscriptions.values() if _granting(entry, statuses)]
    return {
        "active": bool(granting),
        "active_price_ids": sorted({p for entry in granting for p in entry.get("price_ids") or []}),
        "active_product_ids": sorted(
            {p for entry in granting for p in entry.get("product_ids") or []}
        ),
        "features": sorted(set(features)),
    }


def _customer_features(access: Mapping[str, Any], statuses: tuple[str, ...]) -> list[str]:
    """Stripe's entitlements when it sent any for the customer, else its granting
    subscriptions' product features; nothing for a deleted customer."""
    if access.get("deleted"):
        return []
    entitlements = access.get("entitlements")
    if entitlements is not None:
        return list(entitlements.get("features") or [])
    entries = (access.get("subscriptions") or {}).values()
    return sorted(
        {
            f
            for entry in entries
            if _granting(entry, statuses)
            for f in entry.get("product_features") or []
        }
    )


def _put(document: dict[str, Any], content: Mapping[str, Any]) -> bool:
    """Make `document` hold `content` and a fresh `updated_at`, if its content differs;
    whether it did."""
    if {key: value for key, value in document.items() if key != "updated_at"} == content:
        return False
    document.clear()
    document.update(content, updated_at=firestore.SERVER_TIMESTAMP)
    return True


def _settle(ctx: HandlerContext, customer: str, access: dict[str, Any]) -> None:
    """Recompute the customer's access from its entries and link, and its users'."""
    statuses = ctx.settings.access_statuses
    link = access.get("link") or {}
    user = link.get("metadata") or (link.get("checkout") or {}).get("user")
    previous = access.get("app_user_id")
    subscriptions = {
        subscription: {**entry, "customer": customer}
        for subscription, entry in (access.get("subscriptions") or {}).items()
    }
    if access.get("deleted"):
        subscriptions = {k: {**entry, "deleted": True} for k, entry in subscriptions.items()}
    features = _customer_features(access, statuses)
    content = {
        "customer": customer,
        "app_user_id": user,
        "link": link,
        "deleted": access.get("deleted") is True,
        "subscriptions": access.get("subscriptions") or {},
        "entitlements": access.get("entitlements"),
        "customers": [customer],
        **_summary(subscriptions, features, statuses),
    }
    _put(access, content)
    if previous and previous != user:
        _regroup(ctx, previous, customer, {}, None)
    if user:
        _regroup(ctx, user, customer, subscriptions, features)


def _regroup(
    ctx: HandlerContext,
    user: str,
    customer: str,
    subscriptions: Mapping[str, Mapping[str, Any]],
    features: list[str] | None,
) -> None:
    """Put `customer`'s entries and features into `user`'s access (take them out when
    `features` is None: the customer is no longer the user's)."""
    document = ctx.edit(_user_ref(ctx, user))
    kept = {
        key: entry
        for key, entry in (document.get("subscriptions") or {}).items()
        if entry.get("customer") != customer
    }
    by_customer = dict(document.get("customer_features") or {})
    by_customer.pop(customer, None)
    if features is not None:
        kept |= subscriptions
        by_customer[customer] = features
    statuses = ctx.settings.access_statuses
    content = {
        "app_user_id": user,
        "customers": sorted(by_customer),
        "subscriptions": kept,
        "customer_features": by_customer,
        **_summary(kept, (f for listed in by_customer.values() for f in listed), statuses),
    }
    if _put(document, content) and ctx.settings.custom_claims:
        _enqueue_claims(ctx, user)


def _enqueue_claims(ctx: HandlerContext, user: str) -> None:
    """Mirror `user`'s access into Firebase Auth after the commit (an outside effect, so
    through the outbox). The key names the user and the state the event carries, so a
    backfill's pages (all `backfill`) each enqueue their own."""
    if ctx.tasks is None:
        raise RuntimeError("STRIPE_CUSTOM_CLAIMS is set but this transaction has no outbox")
    digest = hashlib.sha256(user.encode()).hexdigest()[:24]
    moment = round(ctx.received.state_time * 1000)
    ctx.enqueue(
        CLAIMS_TASK, {"app_user_id": user}, key=f"claims:{digest}:{ctx.received.id}:{moment}"
    )


@task(CLAIMS_TASK)
def set_custom_claims(run: TaskRun) -> None:
    """Set the user's custom claim `stripe` to `{"active", "features"}` as `user_access` holds
    them when the task runs, not as they were when it was enqueued: two tasks for one user
    racing each other both end by setting the newest state. After setting, the document is
    read again, and set again if it changed meanwhile. A user unknown to Firebase Auth (an app
    user ID that is no Firebase uid) is logged and left alone."""
    from stripe_ledger.firebase_auth import set_claim

    if run.db is None:
        raise RuntimeError("the custom claims task needs the function's Firestore client")
    user = str(run.payload["app_user_id"])
    ref = run.db.collection(USER_ACCESS).document(user)
    with translated("read user_access for custom claims"):
        snapshot = ref.get()
    for _ in range(_CLAIM_ROUNDS):
        access = snapshot.to_dict() or {}
        claim = {"active": access.get("active") is True, "features": access.get("features") or []}
        if not set_claim(run.db.project, user, CLAIM, claim):
            log(
                logging.WARNING,
                "custom claims: no Firebase Auth user has this app user ID",
                task=run.task,
                task_key=run.key,
            )
            return
        with translated("read user_access for custom claims"):
            again = ref.get()
        if again.update_time == snapshot.update_time:
            return
        snapshot = again
    raise RuntimeError("user_access kept changing while its custom claims were set; run again")


SUBSCRIPTIONS.follow(Follower(_subscription_edits, _follow_subscription))
CUSTOMERS.follow(Follower(_customer_edits, _follow_customer))
CHECKOUT_SESSIONS.follow(Follower(_checkout_edits, _follow_checkout))
