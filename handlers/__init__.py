"""Event handlers: one module per Stripe object family, registered with `@on`.

```python
from handlers import on, task

@on("payment_intent.succeeded", "payment_intent.payment_failed")
def record_payment(ctx) -> None: ...

@task("send_receipt")  # runs after the commit what a handler enqueued (docs/outbox.md)
def send_receipt(run) -> None: ...
```

The modules in `BUILTIN_MODULES` are imported at cold start, then the modules named in
STRIPE_HANDLER_MODULES (comma-separated import paths), whose `@on` decorators register into
the same `registry`.
"""

from stripe_ledger.registry import HandlerRegistry

__all__ = ["BUILTIN_MODULES", "on", "registry", "task"]

registry = HandlerRegistry()
on = registry.on
task = registry.task

BUILTIN_MODULES: tuple[str, ...] = (
    "handlers.customers",
    "handlers.subscriptions",
    "handlers.invoices",
    "handlers.payment_intents",
    "handlers.charges",
    "handlers.refunds",
    "handlers.disputes",
    "handlers.checkout",
    "handlers.catalog",
)
"""The built-in projections (see docs/projections.md): one module per Stripe object family."""
