"""Exactly-once processing of Stripe webhook events, recorded in Firestore.

The function's core, in the order a delivery walks it: the HTTP adapter (`http`, the one
place mapping outcomes and errors to statuses), the wiring (`service`), signature
verification and parsing of either kind of event (`verify`), the one pipeline every door
calls (`pipeline`), Stripe's API for thin events, refetch mode and same-second conflicts
(`thin`, `fetch`, over `stripe_api`), the unit of work of one claimed event (`processing`,
with `outcomes` and `errors`), what handlers see and how they register (`context`,
`registry`), the outbox of side effects (`outbox`), the claims (`ledger` over `lease`), the
Firestore adapter (`firestore_client`), configuration (`config`) and structured logs (`logs`).

The operator's tool, `stripe-ledger` (the `cli` package, one module per command group), adds
`operations` (listings and stats), `replay`, `reconcile`, `backfill` and `webhook_sender`.
For development and deployment: `emulator` starts the Firestore emulator for tests, the
benchmark and `make run` (`devserver`); `bundle` builds what Cloud Functions receives.
"""

__all__: list[str] = []
