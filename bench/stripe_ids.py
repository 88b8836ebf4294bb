"""Are Stripe's IDs time-ordered? Decode the creation second in real IDs and compare.

Stripe IDs of the form `evt_1` + 23 characters carry, right after the `1`, five base-62
digits (0-9, A-Z, a-z, which is also ASCII order) that count seconds since an epoch, then a
10-character tag of the account, then random characters. `python -m bench.stripe_ids`
checks that reading against every object with an `id` and a `created` in
tests/fixtures/stripe-events and in Stripe's own API reference example, and reports
whether sorting the IDs as strings (as Firestore orders document IDs) sorts them by time.
"""

from __future__ import annotations

import json
import re
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EPOCH", "StripeId", "decode_created", "main", "parse"]

_DIGITS = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SHAPE = re.compile(
    r"^(?P<prefix>[a-z]+(?:_[a-z]+)*)_(?P<form>[13])(?P<time>[0-9A-Za-z]{5})"
    r"(?P<account>[0-9A-Za-z]{10})(?P<rest>[0-9A-Za-z]{8})$"
)
EPOCH = 1_342_389_380
"""Unix time of the zero of the time digits (2012-07-15 21:56:20 UTC), fitted on real IDs."""

_FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stripe-events"
# From Stripe's API reference (https://docs.stripe.com/api/events/object), as published.
_REFERENCE_EXAMPLE = ("evt_1NG8Du2eZvKYlo2CUI79vXWy", 1686089970)


@dataclass(frozen=True)
class StripeId:
    """An ID split into the parts Stripe's current format puts in it."""

    value: str
    prefix: str
    form: str
    time_digits: str
    account_tag: str

    @property
    def seconds(self) -> int:
        """The creation time the ID encodes, in Unix seconds."""
        number = 0
        for digit in self.time_digits:
            number = number * 62 + _DIGITS.index(digit)
        return EPOCH + number


def parse(value: str) -> StripeId | None:
    """Split `value` if it has the current shape (`xx_1` or `xx_3` and 23 characters)."""
    match = _SHAPE.match(value)
    if match is None:
        return None
    return StripeId(value, match["prefix"], match["form"], match["time"], match["account"])


def decode_created(value: str) -> int | None:
    """The Unix second encoded in a Stripe ID, or None if the ID does not have the shape."""
    parsed = parse(value)
    return parsed.seconds if parsed else None


def _objects(node: Any) -> Iterator[tuple[str, int]]:
    if isinstance(node, dict):
        if isinstance(node.get("id"), str) and isinstance(node.get("created"), int):
            yield node["id"], node["created"]
        for child in node.values():
            yield from _objects(child)
    elif isinstance(node, list):
        for child in node:
            yield from _objects(child)


def sample(fixtures: Path = _FIXTURES) -> dict[str, int]:
    """Every (id, created) of an object in the fixtures, and Stripe's reference example."""
    found = dict([_REFERENCE_EXAMPLE])
    for path in sorted(fixtures.rglob("*.json")):
        for object_id, created in _objects(json.loads(path.read_text())):
            found.setdefault(object_id, created)
    return found


def measure(found: dict[str, int]) -> dict[str, Any]:
    """How well the time digits predict `created`, and whether string order is time order."""
    rows = []
    for object_id, created in found.items():
        parsed = parse(object_id)
        if parsed is not None and parsed.form == "1":
            rows.append((object_id, created, parsed.seconds - created))
    exact = [row for row in rows if abs(row[2]) <= 1]
    # Firestore orders document IDs within a collection: compare IDs of one type only.
    by_type: dict[str, list[int]] = {}
    for object_id, created, _ in sorted(exact):
        by_type.setdefault(object_id.rsplit("_", 1)[0], []).append(created)
    pairs = inversions = 0
    for times in by_type.values():
        for i, earlier in enumerate(times):
            for later in times[i + 1 :]:
                pairs += 1
                inversions += earlier > later
    return {
        "ids_with_created": len(found),
        "ids_in_current_shape": len(rows),
        "decoded_within_1s": len(exact),
        "off_by_more": [row for row in rows if abs(row[2]) > 1],
        "inversions_string_vs_time": inversions,
        "pairs": pairs,
        "rows": sorted(rows, key=lambda row: row[1]),
    }


def main() -> int:
    """Print the measurement."""
    result = measure(sample())
    for object_id, created, error in result["rows"]:
        print(f"  {object_id:<34} created {created}  decoded {created + error}  ({error:+d} s)")
    print(
        f"{result['ids_in_current_shape']} IDs in the current shape, of"
        f" {result['ids_with_created']} objects with an id and a created;"
        f" {result['decoded_within_1s']} decode to their created within 1 s. Sorted as strings"
        f" within each type, {result['inversions_string_vs_time']} of {result['pairs']} pairs"
        " are out of time order."
    )
    for object_id, created, error in result["off_by_more"]:
        print(f"  not matching: {object_id} created {created} ({error:+d} s): a made-up created?")
    return 0


if __name__ == "__main__":
    sys.exit(main())
