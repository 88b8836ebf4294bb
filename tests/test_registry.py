"""The handler registry: patterns, order, and importing handler modules."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from stripe_ledger.context import HandlerContext
from stripe_ledger.errors import ConfigurationError
from stripe_ledger.registry import HandlerRegistry, import_handler_modules


def _noop(ctx: HandlerContext) -> None:
    return None


class TestPatterns:
    def test_exact_prefix_and_star_in_registration_order(self) -> None:
        """Handlers for an exact type, a `family.*` pattern and `*` all run, in the order
        they were registered."""
        registry = HandlerRegistry()

        @registry.on("*")
        def everything(ctx: HandlerContext) -> None: ...

        @registry.on("payment_intent.succeeded")
        def exact(ctx: HandlerContext) -> None: ...

        @registry.on("payment_intent.*")
        def family(ctx: HandlerContext) -> None: ...

        names = [
            r.name.rsplit(".", 1)[-1] for r in registry.handlers_for("payment_intent.succeeded")
        ]
        assert names == ["everything", "exact", "family"]
        assert [r.handler for r in registry.handlers_for("customer.created")] == [everything]

    def test_prefix_matches_whole_segments_only(self) -> None:
        """`charge.*` matches `charge.dispute.created` but not `charges.x`."""
        registry = HandlerRegistry()
        registry.on("charge.*")(_noop)
        assert registry.handlers_for("charge.dispute.created")
        assert not registry.handlers_for("charges.x")
        assert not registry.handlers_for("charge")

    def test_a_handler_registered_for_two_matching_patterns_runs_once(self) -> None:
        registry = HandlerRegistry()
        registry.on("invoice.paid", "invoice.*")(_noop)
        assert len(registry.handlers_for("invoice.paid")) == 1

    def test_registration_after_lookup_is_seen(self) -> None:
        """Lookups are cached, and the cache is dropped when a handler registers."""
        registry = HandlerRegistry()
        assert registry.handlers_for("x.y") == ()
        registry.on("x.y")(_noop)
        assert len(registry.handlers_for("x.y")) == 1

    @pytest.mark.parametrize("pattern", ["", "a*", "a.*.b", "*.created", "payment_intent*"])
    def test_invalid_patterns_are_refused(self, pattern: str) -> None:
        with pytest.raises(ValueError, match=r"pattern|wildcard"):
            HandlerRegistry().on(pattern)

    def test_on_needs_a_type(self) -> None:
        with pytest.raises(TypeError):
            HandlerRegistry().on()


class TestImport:
    @pytest.fixture
    def broken_module(self) -> Iterator[str]:
        name = "tests._broken_handlers"
        module = types.ModuleType(name)
        sys.modules.pop(name, None)
        yield name
        sys.modules.pop(name, None)
        del module

    def test_missing_module_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="'no_such_module' failed to import"):
            import_handler_modules(["no_such_module"])

    def test_module_raising_on_import_is_a_configuration_error(self, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        """A handler module that raises at import makes the whole function misconfigured."""
        (tmp_path / "exploding_handlers.py").write_text("raise RuntimeError('boom')\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        with pytest.raises(ConfigurationError, match="RuntimeError: boom"):
            import_handler_modules(["exploding_handlers"])
