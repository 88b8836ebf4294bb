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
the same `registry` (the function's, `stripe_ledger.registry.registry`).
"""

from stripe_ledger.config import BUILTIN_HANDLER_MODULES as BUILTIN_MODULES
from stripe_ledger.registry import registry

__all__ = ["BUILTIN_MODULES", "on", "registry", "task"]

on = registry.on
task = registry.task
