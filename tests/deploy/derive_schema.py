"""Derive the trimmed hashicorp/google schema the deployment tests check terraform/ against.

No Terraform registry is reachable from our machines, so `terraform providers schema` cannot
run. The PyPI package `cdktn-provider-google` carries bindings generated from the provider's
schema; its jsii assembly (a JSON file inside the wheel) names every resource, data source,
argument and nested block, with the provider version it was generated from. This script
installs that package into a temporary virtual environment (never into .venv), reads the
assembly, and writes the schema of the types terraform/ uses to `google_schema.json` beside
it. Run it by hand when terraform/ starts using a new resource type or the provider is moved
to another version; the tests only ever read the committed JSON:

    python tests/deploy/derive_schema.py            # cdktn-provider-google 21.1.0 = google 8.7.0
    python tests/deploy/derive_schema.py --wheel path/to/cdktn_provider_google-21.1.0-...whl

The hashicorp/archive provider has no such package; its `archive_file` data source is
described by hand below, from the provider's documentation (v2.7).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import venv
from pathlib import Path
from typing import Any

__all__ = ["ARCHIVE_FILE", "derive", "main", "used_types"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = "cdktn-provider-google"
PACKAGE_VERSION = "21.1.0"  # its README: "prebuilt bindings for hashicorp/google 8.7.0"
OUTPUT = HERE / "google_schema.json"

_LINK = re.compile(
    r"\{@link https://registry\.terraform\.io/providers/hashicorp/google/(?P<version>[\d.]+)/docs"
    r"(?:/(?P<kind>resources|data-sources)/\S+)? (?P<name>\w+)\}"
)
_ARGUMENT = re.compile(r"#(?P<name>[a-z0-9_]+) [A-Za-z0-9]+#[a-z0-9_]+\}")
_USED = re.compile(r'^\s*(resource|data)\s+"(google_[a-z0-9_]+)"', re.MULTILINE)
_BASES = {
    "cdktn.TerraformResource": "resources",
    "cdktn.TerraformDataSource": "data_sources",
    "cdktn.TerraformProvider": "provider",
}
# Class members that are the binding's own, not the provider's.
_NOT_ATTRIBUTES = {"tfResourceType", "internalValue", "fqn", "friendlyUniqueId"}

ARCHIVE_FILE: dict[str, Any] = {
    "note": (
        "Described by hand from the hashicorp/archive provider's documentation (v2.7): no "
        "generated bindings for it are published on PyPI."
    ),
    "attributes": {
        "type": {"required": True},
        "output_path": {"required": True},
        "output_file_mode": {"optional": True},
        "source_content": {"optional": True},
        "source_content_filename": {"optional": True},
        "source_file": {"optional": True},
        "source_dir": {"optional": True},
        "excludes": {"optional": True},
        "exclude_symlink_directories": {"optional": True},
        "id": {"computed": True},
        "output_size": {"computed": True},
        "output_md5": {"computed": True},
        "output_sha": {"computed": True},
        "output_sha256": {"computed": True},
        "output_sha512": {"computed": True},
        "output_base64sha256": {"computed": True},
        "output_base64sha512": {"computed": True},
    },
    "blocks": {
        "source": {
            "nesting": "set",
            "block": {
                "attributes": {
                    "content": {"required": True},
                    "filename": {"required": True},
                },
                "blocks": {},
            },
        }
    },
}


def used_types(terraform_dir: Path) -> dict[str, set[str]]:
    """The google resource and data source types declared in `terraform_dir`'s .tf files."""
    found: dict[str, set[str]] = {"resources": set(), "data_sources": set()}
    for path in sorted(terraform_dir.glob("*.tf")):
        for kind, name in _USED.findall(path.read_text()):
            found["resources" if kind == "resource" else "data_sources"].add(name)
    return found


def _snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", camel).lower()


class _Assembly:
    """The jsii assembly of cdktn-provider-google, read as the provider's schema."""

    def __init__(self, assembly: dict[str, Any]) -> None:
        self.types: dict[str, Any] = assembly["types"]
        self.provider_version = ""
        self.classes: dict[str, dict[str, str]] = {kind: {} for kind in _BASES.values()}
        for fqn, spec in self.types.items():
            kind = _BASES.get(spec.get("base", ""))
            match = _LINK.search(spec.get("docs", {}).get("summary", ""))
            if kind is None or match is None:
                continue
            self.provider_version = match["version"]
            self.classes[kind][match["name"]] = fqn

    def block(self, class_fqn: str, config_fqn: str) -> dict[str, Any]:
        """Arguments, nested blocks and computed attributes of one resource or block."""
        attributes: dict[str, Any] = {}
        blocks: dict[str, Any] = {}
        known: dict[str, str] = {}
        for prop in self._properties(config_fqn):
            name = self._argument_name(prop)
            known[prop["name"]] = name
            nested, nesting = self._nested(prop["type"])
            if nested is not None:
                output = self._output_reference(nested)
                blocks[name] = {"nesting": nesting, "block": self.block(output, nested)}
            else:
                attributes[name] = (
                    {"optional": True} if prop.get("optional") else {"required": True}
                )
        for prop in self.types.get(class_fqn, {}).get("properties", []):
            camel = prop["name"]
            if (
                prop.get("static")
                or not prop.get("immutable")
                or camel.endswith("Input")
                or camel in _NOT_ATTRIBUTES
                or camel in known
            ):
                continue
            name = _snake(camel)
            if name not in blocks:
                attributes.setdefault(name, {"computed": True})
        return {
            "attributes": dict(sorted(attributes.items())),
            "blocks": dict(sorted(blocks.items())),
        }

    def _properties(self, fqn: str) -> list[dict[str, Any]]:
        spec = self.types.get(fqn, {})
        properties = list(spec.get("properties", []))
        for parent in spec.get("interfaces", []):
            if parent in self.types:
                properties.extend(self._properties(parent))
        return properties

    @staticmethod
    def _argument_name(prop: dict[str, Any]) -> str:
        match = _ARGUMENT.search(prop.get("docs", {}).get("remarks", ""))
        return match["name"] if match else _snake(prop["name"])

    def _nested(self, type_spec: dict[str, Any]) -> tuple[str | None, str]:
        """The struct a property's type names (a nested block), and how it is nested."""
        options = type_spec.get("union", {}).get("types", [type_spec])
        for option in options:
            fqn = option.get("fqn")
            if fqn and self.types.get(fqn, {}).get("datatype"):
                return fqn, "single"
            element = option.get("collection", {}).get("elementtype", {}).get("fqn")
            if element and self.types.get(element, {}).get("datatype"):
                return element, "list"
        return None, ""

    def _output_reference(self, struct_fqn: str) -> str:
        return f"{struct_fqn}OutputReference"

    def config_of(self, class_fqn: str) -> str:
        parameters = self.types[class_fqn]["initializer"]["parameters"]
        return str(next(p["type"]["fqn"] for p in parameters if p["name"] == "config"))


def derive(assembly: dict[str, Any], wanted: dict[str, set[str]]) -> dict[str, Any]:
    """The trimmed schema of the `wanted` types (plus the provider block and archive_file)."""
    reader = _Assembly(assembly)
    schema: dict[str, Any] = {
        "source": {
            "package": f"{PACKAGE}=={assembly['version']}",
            "provider": f"registry.terraform.io/hashicorp/google {reader.provider_version}",
            "derived_by": "tests/deploy/derive_schema.py",
        },
        "provider": {},
        "resources": {},
        "data_sources": {},
        "archive": {"data_sources": {"archive_file": ARCHIVE_FILE}},
    }
    provider_fqn = reader.classes["provider"]["google"]
    provider = reader.block(provider_fqn, reader.config_of(provider_fqn))
    provider["attributes"].pop("alias", None)  # a meta-argument, accepted anywhere
    schema["provider"] = provider
    for kind in ("resources", "data_sources"):
        for name in sorted(wanted[kind]):
            fqn = reader.classes[kind].get(name)
            if fqn is None:
                raise SystemExit(f"{name} is not a {kind[:-1]} of google {reader.provider_version}")
            schema[kind][name] = reader.block(fqn, reader.config_of(fqn))
    return schema


def _load_assembly(wheel: str | None, version: str) -> dict[str, Any]:
    """Install the package into a throwaway venv and read its jsii assembly."""
    with tempfile.TemporaryDirectory(prefix="cdktn-google-") as scratch:
        env_dir = Path(scratch) / "venv"
        venv.create(env_dir, with_pip=True)
        python = env_dir / "bin" / "python"
        requirement = wheel or f"{PACKAGE}=={version}"
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--no-deps", requirement],
            check=True,
        )
        found = sorted(env_dir.glob("lib/python*/site-packages/cdktn_provider_google/_jsii/*.tgz"))
        if not found:
            raise SystemExit("no jsii assembly found in the installed package")
        with tarfile.open(found[0]) as archive:
            member = archive.extractfile("package/.jsii")
            if member is None:
                raise SystemExit("package/.jsii missing from the jsii tarball")
            loaded: dict[str, Any] = json.load(member)
            return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=PACKAGE_VERSION, help=f"{PACKAGE} version")
    parser.add_argument("--wheel", help="an already downloaded wheel of that version")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    assembly = _load_assembly(args.wheel, args.version)
    schema = derive(assembly, used_types(ROOT / "terraform"))
    args.output.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    counts = {kind: len(schema[kind]) for kind in ("resources", "data_sources")}
    print(f"wrote {args.output} ({schema['source']['provider']}, {counts})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
