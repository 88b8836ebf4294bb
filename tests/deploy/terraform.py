"""Read terraform/ as data: its blocks parsed by python-hcl2, with literal strings unquoted.

python-hcl2 keeps a literal string with its quotes (`"\\"python312\\""`) and an expression as
`${...}`; `literal()` turns the first into `python312` and leaves the second alone, so tests
can tell a fixed value from a computed one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

__all__ = [
    "SCHEMA",
    "TERRAFORM",
    "Block",
    "Configuration",
    "blocks_of",
    "configuration",
    "is_marker",
    "literal",
    "strings",
]

ROOT = Path(__file__).resolve().parent.parent.parent
TERRAFORM = ROOT / "terraform"
SCHEMA: dict[str, Any] = json.loads((Path(__file__).parent / "google_schema.json").read_text())


def is_marker(key: object) -> bool:
    """python-hcl2's own keys (`__is_block__`, `__comments__`, ...), not HCL names."""
    return isinstance(key, str) and key.startswith("__") and key.endswith("__")


def literal(value: Any) -> Any:
    """`value` with HCL string literals unquoted and parser markers dropped, recursively."""
    if isinstance(value, str):
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            return re.sub(r"\\(.)", r"\1", value[1:-1])
        return value
    if isinstance(value, list):
        return [literal(item) for item in value]
    if isinstance(value, dict):
        return {literal(k): literal(v) for k, v in value.items() if not is_marker(k)}
    return value


def strings(value: Any) -> Iterator[str]:
    """Every string anywhere in a parsed value (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not is_marker(key):
                yield key
                yield from strings(item)


def blocks_of(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The nested blocks `name` of a block body (static ones; `dynamic` ones are separate)."""
    found = body.get(name, [])
    return [block for block in found if isinstance(block, dict) and block.get("__is_block__")]


@dataclass(frozen=True)
class Block:
    """One `resource` or `data` block."""

    kind: str  # "resource" or "data"
    type: str
    name: str
    body: dict[str, Any]
    file: str

    @property
    def address(self) -> str:
        prefix = "data." if self.kind == "data" else ""
        return f"{prefix}{self.type}.{self.name}"

    def get(self, key: str, default: Any = None) -> Any:
        """An argument's value, literal strings unquoted."""
        return literal(self.body.get(key, default))


@dataclass(frozen=True)
class Configuration:
    """Everything declared in terraform/*.tf."""

    resources: list[Block]
    data: list[Block]
    variables: dict[str, dict[str, Any]]
    locals: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    providers: list[tuple[str, dict[str, Any]]]
    terraform: list[dict[str, Any]]
    files: dict[str, dict[str, Any]]

    def resource(self, address: str) -> Block:
        """The resource (or `data.` source) at `address`."""
        for block in (*self.resources, *self.data):
            if block.address == address:
                return block
        raise KeyError(address)

    def of_type(self, resource_type: str) -> list[Block]:
        return [block for block in self.resources if block.type == resource_type]

    def default(self, variable: str) -> Any:
        return literal(self.variables[variable].get("default"))


@cache
def configuration(directory: Path = TERRAFORM) -> Configuration:
    """Parse every .tf file of `directory`."""
    resources: list[Block] = []
    data: list[Block] = []
    variables: dict[str, dict[str, Any]] = {}
    local_values: dict[str, Any] = {}
    outputs: dict[str, dict[str, Any]] = {}
    providers: list[tuple[str, dict[str, Any]]] = []
    terraform: list[dict[str, Any]] = []
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            parsed: dict[str, Any] = hcl2.load(handle)
        files[path.name] = parsed
        for kind, target in (("resource", resources), ("data", data)):
            for entry in parsed.get(kind, []):
                for type_name, named in entry.items():
                    if is_marker(type_name):
                        continue
                    for name, body in named.items():
                        if not is_marker(name):
                            target.append(
                                Block(kind, literal(type_name), literal(name), body, path.name)
                            )
        for entry in parsed.get("variable", []):
            variables.update({literal(k): v for k, v in entry.items() if not is_marker(k)})
        for entry in parsed.get("locals", []):
            local_values.update({k: v for k, v in entry.items() if not is_marker(k)})
        for entry in parsed.get("output", []):
            outputs.update({literal(k): v for k, v in entry.items() if not is_marker(k)})
        for entry in parsed.get("provider", []):
            providers.extend((literal(k), v) for k, v in entry.items() if not is_marker(k))
        terraform.extend(parsed.get("terraform", []))
    return Configuration(
        resources, data, variables, local_values, outputs, providers, terraform, files
    )
