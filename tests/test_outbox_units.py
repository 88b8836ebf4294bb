"""The outbox's pure parts, without Firestore: backoff, keys, task registration, settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stripe_ledger.config import Settings
from stripe_ledger.errors import ConfigurationError
from stripe_ledger.outbox import TaskResult, TaskRun, check_key, retry_delay, task_id
from stripe_ledger.registry import HandlerRegistry


class TestBackoff:
    @pytest.mark.parametrize(
        ("attempts", "ceiling"),
        [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (10, 3600), (500, 3600)],
    )
    def test_doubles_from_30_s_up_to_an_hour_with_jitter(self, attempts: int, ceiling: int) -> None:
        """The wait after run n is between half and all of min(30 s x 2^(n-1), 1 h)."""
        assert retry_delay(attempts, lambda: 0.0) == timedelta(seconds=ceiling / 2)
        assert retry_delay(attempts, lambda: 0.999999) < timedelta(seconds=ceiling)
        assert retry_delay(attempts, lambda: 0.999999) > timedelta(seconds=ceiling * 0.99)

    def test_jitter_spreads_tasks_that_failed_together(self) -> None:
        """With the real random source, a hundred tasks failing together do not all come
        back at the same second."""
        waits = {round(retry_delay(3).total_seconds()) for _ in range(100)}
        assert len(waits) > 10
        assert all(60 <= wait <= 120 for wait in waits)


class TestKeys:
    @pytest.mark.parametrize(
        "key", ["evt_1Nx:send_receipt:0", "receipt:in_1/2", "a", "x" * 255, "~!#$%"]
    )
    def test_idempotency_keys_accepted(self, key: str) -> None:
        assert check_key(key) == key

    @pytest.mark.parametrize("key", ["", "x" * 256, "two words", "tab\there", "é", None, 3])
    def test_keys_that_cannot_be_sent_as_a_header_are_refused(self, key: object) -> None:
        """Stripe's Idempotency-Key is at most 255 characters, sent as a header."""
        with pytest.raises(ValueError, match="task key"):
            check_key(key)

    def test_document_ids_are_hashes_of_keys(self) -> None:
        """A key with `/` or any length maps to a 64-hex-digit ID, the same every time."""
        assert task_id("receipt:in_1/2") == task_id("receipt:in_1/2")
        assert task_id("a") != task_id("b")
        assert len(task_id("x" * 255)) == 64
        assert "/" not in task_id("a/b")


class TestRegistration:
    def test_a_task_registers_and_is_found(self) -> None:
        registry = HandlerRegistry()

        @registry.task("send_receipt")
        def send(run: TaskRun) -> None: ...

        assert registry.executor("send_receipt") is send
        assert registry.executor("other") is None
        assert registry.task_names() == ["send_receipt"]

    def test_registering_the_same_function_again_is_harmless(self) -> None:
        """A module imported twice registers its executors again without error."""
        registry = HandlerRegistry()

        def send(run: TaskRun) -> None: ...

        registry.task("send_receipt")(send)
        registry.task("send_receipt")(send)
        assert registry.executor("send_receipt") is send

    def test_a_second_executor_for_a_name_is_refused(self) -> None:
        registry = HandlerRegistry()

        @registry.task("send_receipt")
        def send(run: TaskRun) -> None: ...

        def other(run: TaskRun) -> None: ...

        with pytest.raises(ValueError, match="already has an executor"):
            registry.task("send_receipt")(other)

    @pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 101])
    def test_invalid_task_names_are_refused(self, name: str) -> None:
        with pytest.raises(ValueError, match="invalid task name"):
            HandlerRegistry().task(name)

    def test_the_handlers_package_exports_task(self) -> None:
        """`from handlers import task` registers into the function's registry."""
        import handlers

        assert handlers.task == handlers.registry.task


class TestSettings:
    def test_defaults(self) -> None:
        settings = Settings.from_env({}, require_secret=False)
        assert (settings.tasks_collection, settings.task_max_attempts) == ("stripe_tasks", 10)

    def test_read_from_the_environment(self) -> None:
        settings = Settings.from_env(
            {"STRIPE_TASKS_COLLECTION": "my_tasks", "STRIPE_TASK_MAX_ATTEMPTS": "3"},
            require_secret=False,
        )
        assert (settings.tasks_collection, settings.task_max_attempts) == ("my_tasks", 3)

    @pytest.mark.parametrize(
        ("environ", "message"),
        [
            ({"STRIPE_TASK_MAX_ATTEMPTS": "0"}, "STRIPE_TASK_MAX_ATTEMPTS must be at least 1"),
            ({"STRIPE_TASK_MAX_ATTEMPTS": "x"}, "STRIPE_TASK_MAX_ATTEMPTS must be an integer"),
            ({"STRIPE_TASKS_COLLECTION": "a/b"}, "STRIPE_TASKS_COLLECTION must be"),
        ],
    )
    def test_unsafe_values_are_refused(self, environ: dict[str, str], message: str) -> None:
        with pytest.raises(ConfigurationError, match=message):
            Settings.from_env(environ, require_secret=False)


def test_which_outcomes_are_ok() -> None:
    """Done, or rightly left for later, is ok; anything that needs an operator is not."""

    def ok(outcome: str) -> bool:
        return TaskResult("k", "t", None, "pending", outcome).ok

    assert all(map(ok, ["done", "in_flight", "not_due", "skipped", "would_run", "deferred"]))
    assert not any(
        map(ok, ["failed", "dead", "lease_lost", "no_executor", "unavailable", "missing"])
    )
