"""The handler registry: which functions run for which event types, in which order."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from stripe_ledger.errors import ConfigurationError

if TYPE_CHECKING:
    from google.cloud.firestore import DocumentReference

    from stripe_ledger.context import HandlerContext
    from stripe_ledger.outbox.tasks import TaskRun
    from stripe_ledger.verify import VerifiedEvent

__all__ = [
    "Applies",
    "Executor",
    "Handler",
    "HandlerRegistry",
    "Reads",
    "Registration",
    "import_handler_modules",
    "matches",
    "registry",
]

Handler = Callable[["HandlerContext"], None]
"""A handler: reads and writes through `ctx`, returns nothing, raises to fail the event."""

Reads = Callable[["HandlerContext"], Iterable["DocumentReference"]]
"""Names the documents a handler will read (or edit), so that all of them are fetched in one
batch; it may consult `ctx.cached` to name more once those are read."""

Applies = Callable[["VerifiedEvent"], bool]
"""Whether a handler applies to one event of a type it is registered for (e.g. only to
objects with an ID). Decided before the event is claimed, so it must be a pure function of
the event: an event no handler applies to is recorded `ignored`."""

Executor = Callable[["TaskRun"], object]
"""A task executor: performs one side effect that handlers enqueued with `ctx.enqueue`, at
least once, after the event's commit; raises to be run again later (see docs/outbox.md)."""

H = TypeVar("H", bound=Handler)
E = TypeVar("E", bound=Executor)

_TASK_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


@dataclass(frozen=True)
class Registration:
    """One handler registered for one event-type pattern."""

    pattern: str
    name: str
    handler: Handler
    reads: Reads | None = None
    when: Applies | None = None
    edits: Reads | None = None

    def applies_to(self, received: VerifiedEvent) -> bool:
        """Whether this handler runs for `received` (its type already matched)."""
        return self.when is None or self.when(received)


class HandlerRegistry:
    """Handlers keyed by event type; patterns are exact types, `prefix.*` or `*`."""

    def __init__(self) -> None:
        self._registrations: list[Registration] = []
        self._cache: dict[str, tuple[Registration, ...]] = {}
        self._executors: dict[str, Executor] = {}
        self._families: dict[str, str] = {}

    def on(
        self,
        *event_types: str,
        reads: Reads | None = None,
        when: Applies | None = None,
        edits: Reads | None = None,
    ) -> Callable[[H], H]:
        """Register the decorated function for `event_types`; return it unchanged.

        `reads`, if given, returns the documents the handler will read with `ctx.get`; they
        are fetched together with every other handler's before the first handler runs.
        `edits`, if given, returns the documents it changes with `ctx.edit` (read without a
        lock, written with a precondition: `stripe_ledger.context.Edits`); such handlers run
        after the others, so that the read is close to the commit. `when`, if given,
        narrows the events of those types the handler applies to.
        """
        if not event_types:
            raise TypeError("on() needs at least one event type")
        for pattern in event_types:
            if not isinstance(pattern, str) or not pattern or "*" in pattern.removesuffix("*"):
                raise ValueError(f"invalid event type pattern {pattern!r}")
            if pattern.endswith("*") and pattern != "*" and not pattern.endswith(".*"):
                raise ValueError(f"wildcards must be a whole segment: {pattern!r}")

        def register(handler: H) -> H:
            name = f"{handler.__module__}.{handler.__qualname__}"
            for pattern in event_types:
                registration = Registration(pattern, name, handler, reads, when, edits)
                self._registrations.append(registration)
            self._cache.clear()
            return handler

        return register

    def task(self, name: str) -> Callable[[E], E]:
        """Register the decorated function as the executor of task `name`; return it unchanged.

        Handlers enqueue the task with `ctx.enqueue(name, payload)`. A name has one executor:
        registering a different function under a taken name raises `ValueError`.
        """
        if not isinstance(name, str) or not _TASK_NAME.match(name):
            raise ValueError(f"invalid task name {name!r}: 1-100 letters, digits, '_', '.' or '-'")

        def register(executor: E) -> E:
            known = self._executors.get(name)
            if known is not None and _qualified(known) != _qualified(executor):
                raise ValueError(f"task {name!r} already has an executor: {_qualified(known)}")
            self._executors[name] = executor
            return executor

        return register

    def family(self, object_type: str, event_type: str) -> None:
        """Name `event_type` as the one whose handlers keep objects of `object_type` (e.g.
        `subscription`: `customer.subscription.updated`): a thin event of a type no handler
        takes (a thin-only type like `v1.customer.subscription.past_due`) about such an
        object runs those handlers on it."""
        self._families[object_type] = event_type

    def family_type(self, object_type: str) -> str | None:
        """The event type registered by `family` for `object_type`, or None."""
        return self._families.get(object_type)

    def executor(self, name: str) -> Executor | None:
        """The executor registered for task `name`, or None."""
        return self._executors.get(name)

    def task_names(self) -> list[str]:
        """Every task that has an executor, in registration order."""
        return list(self._executors)

    def handlers_for(self, event_type: str) -> tuple[Registration, ...]:
        """The registrations matching `event_type`, in registration order, each handler once."""
        cached = self._cache.get(event_type)
        if cached is None:
            seen: set[Handler] = set()
            found = []
            for registration in self._registrations:
                if registration.handler not in seen and matches(registration.pattern, event_type):
                    seen.add(registration.handler)
                    found.append(registration)
            cached = self._cache[event_type] = tuple(found)
        return cached

    def applicable(self, received: VerifiedEvent) -> tuple[Registration, ...]:
        """The registrations that run for `received`: matching its type, and its `when`."""
        return tuple(r for r in self.handlers_for(received.type) if r.applies_to(received))

    def handler_names(self) -> set[str]:
        """The names (`module.function`) of every registered handler."""
        return {r.name for r in self._registrations}

    def patterns(self) -> list[str]:
        """Every registered pattern, in registration order, without repeats."""
        return list(dict.fromkeys(r.pattern for r in self._registrations))


def matches(pattern: str, event_type: str) -> bool:
    """Whether `event_type` matches `pattern`: an exact type, `family.*` or `*`."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def _qualified(function: Executor) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def import_handler_modules(names: Iterable[str]) -> None:
    """Import each module so that its `@on` decorators register; raise `ConfigurationError`."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:
            raise ConfigurationError(
                f"handler module {name!r} failed to import: {type(error).__name__}: {error}"
            ) from error


registry = HandlerRegistry()
"""The function's registry: `handlers.on` and `handlers.task` register into it, and the
function, the outbox runner and the CLI run what it holds."""
