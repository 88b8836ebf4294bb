"""Exactly-once processing of Stripe webhook events, recorded in Firestore.

The package holds the core of the function: signature verification (`verify`), the event
ledger (`ledger`), the transactional processing of one event (`processing`), the handler
registry (`registry`) and the context handlers receive (`context`), configuration (`config`),
structured logging (`logs`) and the HTTP adapter (`http`). `bootstrap` wires them together.
"""

__all__: list[str] = []
