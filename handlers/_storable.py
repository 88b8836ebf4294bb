"""Fit a Stripe object into what Firestore can store, instead of failing the event forever.

Real Stripe objects almost always fit, but a signed event is stored whatever it holds, and a
write Firestore refuses fails the event on every redelivery until it is dead-lettered. So the
projection document is adapted, at the few places Firestore's limits require:

- map keys Firestore refuses or reserves (the empty key; `__name__`-style, which Stripe allows
  in `metadata`) get a `~` appended;
- integers outside Firestore's 64-bit range are stored as their decimal text;
- maps and arrays deeper than Firestore's 20 levels, and arrays directly inside arrays, are
  stored as their JSON text;
- if the document would still exceed Firestore's 1 MiB, or its 40,000 index entries, the
  largest top-level fields of `object` are left out, largest first, and named in
  `object_omitted` (the event's ledger record keeps the full payload); a projected field that
  alone is too large is stored as null and named in `fields_omitted`.

Every path changed by the first three rules is named in `object_adapted` (`metadata.__x__`,
`object.lines`), so that an app can tell an adapted document from Stripe's object.

Sizes are counted by Firestore's own rules (cloud.google.com/firestore/docs/storage-size),
not as JSON text: a string is its UTF-8 bytes + 1, a number or timestamp 8 bytes, a boolean
or null 1, a map the sum of its keys (as strings) and values, an array the sum of its
elements, plus the document's name and 32 bytes. So `[0, 0, ...]` counts 8 bytes an element,
where its JSON counts 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_INDEX_ENTRIES",
    "firestore_size",
    "index_entries",
    "storable_document",
]

MAX_DEPTH = 20
"""Firestore's maximum depth of nested maps and arrays; a top-level field is at depth 1."""

MAX_DOCUMENT_BYTES = 1_048_576 - 32 - 1_600 - 4_096
"""Firestore's 1 MiB per document, less its 32 bytes of overhead, the longest document name
(a 1,500-byte ID in a collection) and room for the bookkeeping fields."""

MAX_INDEX_ENTRIES = 40_000
"""Firestore's maximum index entries per document (counted as if every field were indexed:
the terraform exempts `object`, but an unexempted database indexes it)."""

_INT64 = range(-(2**63), 2**63)
_AS_IS = frozenset({str, float, bool, type(None)})
_RESERVED_KEY = re.compile(r"^__.*__$", re.DOTALL)
_MAX_ADAPTED_NAMED = 50
_BOOKKEEPING = frozenset(
    {"object", "livemode", "account", "last_event_id", "last_event_created", "deleted"}
)


def storable_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """`document` (with the Stripe object under `object`) adapted to Firestore's limits."""
    adapted: list[str] = []
    stored: dict[str, Any] = _storable(document, depth=0, path="", adapted=adapted)
    if _too_large(stored):  # one check for nearly every Stripe object, which fits
        obj = stored.get("object")
        if isinstance(obj, dict):
            omitted = []
            for key in sorted(obj, key=lambda key: _cost(obj[key]), reverse=True):
                if not _too_large(stored):
                    break
                omitted.append(key)
                stored["object"] = {k: value for k, value in obj.items() if k not in omitted}
            stored["object_omitted"] = sorted(omitted)
        if _too_large(stored):
            fields_omitted = []
            for key in sorted(stored, key=lambda key: _cost(stored[key]), reverse=True):
                if not _too_large(stored):
                    break
                if key not in _BOOKKEEPING and stored[key] is not None:
                    stored[key] = None
                    fields_omitted.append(key)
            stored["fields_omitted"] = sorted(fields_omitted)
    if adapted:
        stored["object_adapted"] = sorted(set(adapted))[:_MAX_ADAPTED_NAMED]
    return stored


def _storable(value: Any, depth: int, path: str, adapted: list[str], in_array: bool = False) -> Any:
    """`value`, at `depth` in the document, made storable (see the module docstring); each
    path changed is appended to `adapted`."""
    if _plain(value):
        return value
    is_map = type(value) is dict or isinstance(value, Mapping)
    if (is_map or isinstance(value, list)) and (
        depth >= MAX_DEPTH or (in_array and isinstance(value, list))
    ):
        adapted.append(path)
        return json.dumps(value, ensure_ascii=False)
    if is_map:
        stored = {}
        for key, item in value.items():
            name = str(key)  # as received: what adapted paths are named by
            if not name or (name.startswith("__") and _RESERVED_KEY.match(name)):
                adapted.append(_joined(path, name))
                key = f"{name}~"
            else:
                key = name
            # Most values are plain: no call, and no path built for them.
            stored[key] = (
                item if _plain(item) else _storable(item, depth + 1, _joined(path, name), adapted)
            )
        return stored
    if isinstance(value, list):
        return [
            item if _plain(item) else _storable(item, depth + 1, path, adapted, in_array=True)
            for item in value
        ]
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        adapted.append(path)
        return str(value)
    return value


def _joined(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _plain(value: Any) -> bool:
    """Whether `value` is stored as it is: most values of a Stripe object, told by their exact
    type, without abstract type checks."""
    kind = type(value)
    return kind in _AS_IS or (kind is int and -(2**63) <= value < 2**63)


def _too_large(document: Mapping[str, Any]) -> bool:
    # Firestore counts at most 8 bytes for each byte of a value's JSON text (a number is 8
    # bytes, its text at least 1) and at most 3 index entries for each character (a value
    # is at least one): a document whose JSON text is short enough needs no walk.
    text = json.dumps(document, ensure_ascii=False, default=str)
    if 8 * len(text.encode(errors="surrogatepass")) <= MAX_DOCUMENT_BYTES and (
        3 * len(text) <= MAX_INDEX_ENTRIES
    ):
        return False
    return (
        firestore_size(document) > MAX_DOCUMENT_BYTES or index_entries(document) > MAX_INDEX_ENTRIES
    )


def _cost(value: Any) -> tuple[int, int]:
    return firestore_size(value), index_entries(value)


def firestore_size(value: Any) -> int:
    """The bytes Firestore counts for `value` (a document's fields, as a map, count as the
    map's keys and values)."""
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | float):
        return 8
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, Mapping):
        return sum(len(str(key).encode()) + 1 + firestore_size(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return sum(firestore_size(item) for item in value)
    return 8  # timestamps, geo points, references' IDs: about their fixed size


def index_entries(value: Any) -> int:
    """About the single-field index entries Firestore keeps for `value`: an ascending and a
    descending entry for every value, and an array-contains entry for every array element."""
    if isinstance(value, Mapping):
        return sum(index_entries(item) for item in value.values())
    if isinstance(value, list | tuple):
        return 2 + sum(1 + index_entries(item) for item in value)
    return 2
