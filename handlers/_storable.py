"""Fit a Stripe object into what Firestore can store, instead of failing the event forever.

Real Stripe objects almost always fit, but a signed event is stored whatever it holds, and a
write Firestore refuses fails the event on every redelivery until it is dead-lettered. So the
projection document is adapted, at the few places Firestore's limits require:

- map keys Firestore reserves (`__name__`-style, which Stripe allows in `metadata`) get a
  `~` appended;
- maps and arrays deeper than Firestore's 20 levels, and arrays directly inside arrays, are
  stored as their JSON text;
- if the document would still exceed Firestore's 1 MiB, the largest top-level fields of
  `object` are left out, largest first, and named in `object_omitted` (the event's ledger
  record keeps the full payload).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_DOCUMENT_BYTES", "storable_document"]

MAX_DEPTH = 20
"""Firestore's maximum depth of nested maps and arrays; a top-level field is at depth 1."""

MAX_DOCUMENT_BYTES = 1_000_000
"""Below Firestore's 1 MiB per document, with room for its per-field overhead."""

_RESERVED_KEY = re.compile(r"^__.*__$", re.DOTALL)


def storable_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """`document` (with the Stripe object under `object`) adapted to Firestore's limits."""
    stored: dict[str, Any] = _storable(document, depth=0)
    obj = stored.get("object")
    if isinstance(obj, dict) and _size(stored) > MAX_DOCUMENT_BYTES:
        excess = _size(stored) - MAX_DOCUMENT_BYTES
        omitted = []
        for key in sorted(obj, key=lambda key: _size(obj[key]), reverse=True):
            if excess <= 0:
                break
            excess -= _size(obj[key])
            omitted.append(key)
        stored["object"] = {key: value for key, value in obj.items() if key not in omitted}
        stored["object_omitted"] = sorted(omitted)
    return stored


def _storable(value: Any, depth: int, in_array: bool = False) -> Any:
    """`value`, at `depth` in the document, made storable (see the module docstring)."""
    if isinstance(value, Mapping | list) and (
        depth >= MAX_DEPTH or (in_array and isinstance(value, list))
    ):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return {
            f"{key}~" if _RESERVED_KEY.match(key) else key: _storable(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_storable(item, depth + 1, in_array=True) for item in value]
    return value


def _size(value: Any) -> int:
    """About the bytes Firestore counts for `value` (its UTF-8 JSON, a slight overestimate)."""
    return len(json.dumps(value, ensure_ascii=False).encode())
