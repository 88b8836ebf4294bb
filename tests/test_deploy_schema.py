"""terraform/ is what `terraform apply` accepts, checked offline.

No provider registry is reachable here, so `terraform validate` cannot run. Instead every
resource type, argument and nested block is looked up in the hashicorp/google 8.7.0 schema
derived from cdktn-provider-google (tests/deploy/google_schema.json, made by
tests/deploy/derive_schema.py), every reference must name something declared, and
`terraform fmt` must have nothing to change.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.derive_schema import used_types
from tests.deploy.terraform import (
    SCHEMA,
    TERRAFORM,
    Block,
    blocks_of,
    configuration,
    is_marker,
    literal,
    strings,
)

_META_ARGUMENTS = {"count", "for_each", "depends_on", "provider", "lifecycle"}
_LIFECYCLE = {
    "create_before_destroy",
    "prevent_destroy",
    "ignore_changes",
    "replace_triggered_by",
    "precondition",
    "postcondition",
}
_REFERENCE = re.compile(
    r"(?<![\w.\"/-])(data\.)?((?:google_|terraform_data)[a-z0-9_]*)\.([a-z0-9_-]+)"
    r"((?:\[[^\]]*\])?(?:\.[a-z_][a-z0-9_]*(?:\[[^\]]*\])?)*)"
)
_NAMED = re.compile(r"(?<![\w.])(var|local)\.([a-z0-9_]+)")


# Terraform's built-in `terraform_data` (no provider to download), from its documentation.
TERRAFORM_DATA: dict[str, Any] = {
    "attributes": {
        "id": {"computed": True},
        "input": {"optional": True},
        "output": {"computed": True},
        "triggers_replace": {"optional": True},
    },
    "blocks": {},
}


def schema_of(block: Block) -> dict[str, Any]:
    if block.type == "terraform_data":
        return TERRAFORM_DATA
    kind = "data_sources" if block.kind == "data" else "resources"
    schema: dict[str, Any] = SCHEMA[kind][block.type]
    return schema


def problems(body: dict[str, Any], schema: dict[str, Any], where: str) -> Iterator[str]:
    """Every argument or block of `body` that `schema` does not accept, and every missing
    required argument."""
    attributes, nested = schema["attributes"], schema["blocks"]
    for key, value in body.items():
        if is_marker(key):
            continue
        if key == "dynamic":
            for entry in value:
                for quoted, dynamic in entry.items():
                    if is_marker(quoted):
                        continue
                    name = literal(quoted)
                    if name not in nested:
                        yield f"{where}: dynamic block {name!r} is not a block of this type"
                        continue
                    for content in blocks_of(dynamic, "content"):
                        yield from problems(content, nested[name]["block"], f"{where}.{name}")
            continue
        if key in nested:
            if not blocks_of(body, key):
                yield f"{where}: {key} is a block, written as an argument"
            for block in blocks_of(body, key):
                yield from problems(block, nested[key]["block"], f"{where}.{key}")
        elif key in attributes:
            if attributes[key].get("computed") and key != "id":
                yield f"{where}: {key} is computed by the provider and cannot be set"
            if (
                isinstance(value, list)
                and value
                and all(isinstance(item, dict) and item.get("__is_block__") for item in value)
            ):
                yield f"{where}: {key} is an argument, written as a block"
        else:
            yield f"{where}: unknown argument or block {key!r}"
    for key, spec in attributes.items():
        if spec.get("required") and key not in body:
            yield f"{where}: required argument {key!r} is missing"


def resource_problems(block: Block) -> Iterator[str]:
    body = {k: v for k, v in block.body.items() if k not in _META_ARGUMENTS}
    for lifecycle in blocks_of(block.body, "lifecycle"):
        unknown = {k for k in lifecycle if not is_marker(k)} - _LIFECYCLE
        if unknown:
            yield f"{block.address}: unknown lifecycle arguments {sorted(unknown)}"
    yield from problems(body, schema_of(block), block.address)


def references(value: Any) -> Iterator[tuple[str | None, str, str, str]]:
    """(data., type, name, rest) of every resource reference inside an expression."""
    for text in strings(value):
        if "${" not in text and not _REFERENCE.fullmatch(text):
            continue
        for match in _REFERENCE.finditer(text):
            yield match.group(1), match.group(2), match.group(3), match.group(4)


def attribute_path_problems(schema: dict[str, Any], rest: str, where: str) -> Iterator[str]:
    """Follow `.a[0].b` through `schema`: blocks may be indexed, attributes end the path."""
    segments = [s for s in re.sub(r"\[[^\]]*\]", "", rest).split(".") if s]
    current = schema
    for segment in segments:
        if segment in current["blocks"]:
            current = current["blocks"][segment]["block"]
        elif segment in current["attributes"]:
            return  # a value: what follows indexes into it (a map key, a list element)
        else:
            yield f"{where}: {segment!r} is not an attribute of {rest!r}'s resource type"
            return


class TestProviderSchemaCache:
    def test_cache_is_hashicorp_google_8(self) -> None:
        """The cached schema was derived from bindings of hashicorp/google 8.x."""
        assert re.fullmatch(
            r"registry\.terraform\.io/hashicorp/google 8\.\d+\.\d+", SCHEMA["source"]["provider"]
        )

    def test_every_type_used_is_cached(self) -> None:
        """Each google type terraform/ declares is in the cache (else: run derive_schema.py)."""
        used = used_types(TERRAFORM)
        for kind in ("resources", "data_sources"):
            missing = used[kind] - set(SCHEMA[kind])
            assert not missing, f"run tests/deploy/derive_schema.py to add {sorted(missing)}"


class TestConfigurationParses:
    def test_every_tf_file_parses(self) -> None:
        """python-hcl2 parses every .tf file, and the expected files are there."""
        config = configuration()
        assert {"versions.tf", "variables.tf", "outputs.tf", "main.tf"} <= set(config.files)
        assert config.resources

    def test_required_providers(self) -> None:
        """google ~> 8.0 from hashicorp, nothing else: the source zip is `make bundle`'s, so
        the archive provider is no longer needed."""
        (block,) = configuration().terraform
        (providers,) = literal(block["required_providers"])
        assert providers == {"google": {"source": "hashicorp/google", "version": "~> 8.0"}}

    def test_only_google_types_and_builtin_terraform_data(self) -> None:
        """Every resource and data source comes from the google provider, but the built-in
        terraform_data of the bootstrap apply."""
        config = configuration()
        for block in (*config.resources, *config.data):
            assert block.type.startswith("google_") or block.type == "terraform_data", block.type
        assert [b.address for b in config.resources if b.type == "terraform_data"] == [
            "terraform_data.bootstrap"
        ]


class TestAgainstProviderSchema:
    def test_every_argument_and_block_exists(self) -> None:
        """No argument or block the provider would reject, no required argument missing."""
        config = configuration()
        found = [p for block in (*config.resources, *config.data) for p in resource_problems(block)]
        assert not found, "\n".join(found)

    def test_provider_block_arguments_exist(self) -> None:
        """The `provider "google"` block only sets arguments the provider has."""
        providers = configuration().providers
        assert [name for name, _ in providers] == ["google"]
        found = list(problems(providers[0][1], SCHEMA["provider"], "provider.google"))
        assert not found, "\n".join(found)

    def test_checker_rejects_what_terraform_would(self) -> None:
        """The schema check itself catches a misspelt argument, a wrong block and a gap."""
        schema = SCHEMA["resources"]["google_firestore_field"]
        body = {
            "collection": '"c"',
            "feild": '"f"',
            "ttl_config": [{"expiration": '"1s"', "__is_block__": True}],
        }
        found = list(problems(body, schema, "x"))
        assert any("'feild'" in p for p in found)
        assert any("'expiration'" in p for p in found)
        assert any("required argument 'field'" in p for p in found)


class TestReferences:
    def test_every_reference_points_at_a_declared_resource(self) -> None:
        """`type.name.attr` references name declared resources and attributes that exist."""
        config = configuration()
        declared = {block.address: block for block in (*config.resources, *config.data)}
        everything: list[Any] = [
            *(block.body for block in (*config.resources, *config.data)),
            *config.locals.values(),
            *config.outputs.values(),
        ]
        found = []
        for value in everything:
            for data, type_name, name, rest in references(value):
                address = f"{data or ''}{type_name}.{name}"
                if address not in declared:
                    found.append(f"{address} is not declared")
                    continue
                found.extend(
                    attribute_path_problems(schema_of(declared[address]), rest, address + rest)
                )
        assert not found, "\n".join(found)

    def test_every_variable_and_local_is_declared_and_used(self) -> None:
        """var.* and local.* references resolve, and nothing declared is left unused."""
        config = configuration()
        used: dict[str, set[str]] = {"var": set(), "local": set()}
        for parsed in config.files.values():
            for text in strings(parsed):
                for namespace, name in _NAMED.findall(text):
                    used[namespace].add(name)
        assert used["var"] - set(config.variables) == set()
        assert used["local"] - set(config.locals) == set()
        assert set(config.variables) - used["var"] == set(), "unused variables"
        assert set(config.locals) - used["local"] == set(), "unused locals"


class TestFormatting:
    def test_terraform_fmt_has_nothing_to_change(self, tmp_path: Path) -> None:
        """`terraform fmt -check -recursive terraform/` passes (the binary runs offline)."""
        binary = shutil.which("terraform")
        if binary is None:
            pytest.fail("terraform is not on PATH: install Terraform >= 1.9 to run this check")
        config_file = tmp_path / "terraformrc"
        config_file.write_text("")
        result = subprocess.run(
            [binary, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": str(config_file)},
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
