"""Exactly-once processing of Stripe webhook events, recorded in Firestore.

The function's core: signature verification (`verify`), the event ledger (`ledger`), the
transactional processing of one event (`processing`, with `outcomes` and `errors`), the
handler registry (`registry`) and the context handlers receive (`context`), the outbox of
side effects (`outbox`), thin events and refetch mode (`thin`, `fetch`, over `stripe_api`),
configuration (`config`), structured logging (`logs`), the Firestore client
(`firestore_client`) and the HTTP adapter (`http`); `service` wires them together.

The operator's tool, `stripe-ledger` (the `cli` package, one module per command group),
adds `operations` (listings and stats), `replay`, `reconcile` and `webhook_sender`;
`emulator` starts the Firestore emulator for tests, the benchmark and `make run`.
"""

__all__: list[str] = []
