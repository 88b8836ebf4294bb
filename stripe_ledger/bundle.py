"""Build the function's source bundle: exactly what Cloud Functions receives, one definition.

`make bundle` (`python -m stripe_ledger.bundle`) writes `dist/function-source.zip` and, beside
it, `dist/function-source.json`, the manifest Terraform reads (terraform/source.tf uploads
that zip and refuses to plan when it is missing, stale, or built for other handler modules).
The zip holds:

- `main.py` and the `.py` files of `stripe_ledger/` and `handlers/` (the core and the
  built-in handlers);
- every package named by the handler modules (`myapp.billing` ships all of `myapp/`, minus
  caches and hidden files), which are Terraform's `handler_modules`: read from
  `terraform/terraform.tfvars` unless given with `--handler-modules` (`make bundle
  HANDLER_MODULES=...`);
- a `requirements.txt` compiled by uv from the pinned `requirements.txt` together with the
  user's own `requirements-handlers.in` (when it exists), every package pinned with its
  hashes, so that pip on Cloud Build installs exactly that set or refuses.

The zip is deterministic (sorted names, fixed timestamps and modes): the same inputs give
the same bytes, hence the same content-hash object name and no needless redeploy.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EXTRA_REQUIREMENTS",
    "MANIFEST",
    "OUTPUT",
    "ROOT",
    "Bundle",
    "BundleError",
    "build",
    "compile_requirements",
    "handler_modules_from_tfvars",
    "main",
    "source_files",
    "write_zip",
]

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "dist" / "function-source.zip"
MANIFEST = "function-source.json"
EXTRA_REQUIREMENTS = "requirements-handlers.in"
TFVARS = ROOT / "terraform" / "terraform.tfvars"
CORE_PACKAGES = ("stripe_ledger", "handlers")
PYTHON_VERSION = "3.12"  # the runtime's oldest (terraform: python312 or python313)

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold


class BundleError(RuntimeError):
    """The bundle cannot be built as asked; the message says what to do."""


@dataclass(frozen=True)
class Bundle:
    """A built bundle: where its zip is, its SHA-256, and what went into it."""

    zip_path: Path
    sha256: str
    handler_modules: tuple[str, ...]
    files: tuple[str, ...]
    inputs: Mapping[str, str]

    def manifest(self) -> dict[str, object]:
        """The manifest Terraform reads (`inputs`: file -> SHA-256, relative to ROOT)."""
        return {
            "zip": self.zip_path.name,
            "sha256": self.sha256,
            "handler_modules": list(self.handler_modules),
            "files": list(self.files),
            "inputs": dict(sorted(self.inputs.items())),
        }


def _python_files(root: Path, package: str) -> list[str]:
    return sorted(
        path.relative_to(root).as_posix()
        for path in (root / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def _package_files(root: Path, package: str) -> list[str]:
    """Every file of a user's package but caches and hidden files (templates ship too)."""
    found = []
    for path in (root / package).rglob("*"):
        relative = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if "__pycache__" in relative.parts or path.suffix in {".pyc", ".pyo"}:
            continue
        found.append(relative.as_posix())
    return sorted(found)


def _module_exists(root: Path, module: str) -> bool:
    base = root.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def source_files(handler_modules: Sequence[str], root: Path = ROOT) -> dict[str, Path]:
    """The bundle's source files (name in the zip -> file on disk), requirements aside, of
    the project at `root`.

    Raises BundleError for a handler module that is not an import path or has no file.
    """
    files = {"main.py": root / "main.py"}
    for package in CORE_PACKAGES:
        files.update({name: root / name for name in _python_files(root, package)})
    for module in handler_modules:
        if not _MODULE.match(module):
            raise BundleError(f"handler module {module!r} is not a Python import path")
        top = module.split(".")[0]
        if not _module_exists(root, module):
            path = "/".join(module.split("."))
            raise BundleError(
                f"handler module {module}: neither {path}.py nor {path}/__init__.py exists "
                f"in {root}; put the package there or fix handler_modules"
            )
        if top in CORE_PACKAGES:
            continue
        if top == "main" or top == "requirements":
            raise BundleError(f"handler module {module}: {top!r} is a name the bundle uses")
        if (root / top).is_dir():
            files.update({name: root / name for name in _package_files(root, top)})
        else:
            files[f"{top}.py"] = root / f"{top}.py"
    return files


def compile_requirements(pinned: Path, extra: Path | None, uv: str | None = None) -> str:
    """requirements.txt for the bundle: `pinned` and `extra` resolved together by uv, every
    package with its hashes. Needs the package index (PyPI)."""
    uv = uv or shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    with tempfile.TemporaryDirectory(prefix="bundle-requirements-") as scratch:
        # Inputs copied under fixed names, so the `# via` comments name no local path.
        work = Path(scratch)
        inputs = ["requirements.txt"]
        shutil.copyfile(pinned, work / "requirements.txt")
        if extra is not None:
            shutil.copyfile(extra, work / EXTRA_REQUIREMENTS)
            inputs.append(EXTRA_REQUIREMENTS)
        command = [
            uv,
            "pip",
            "compile",
            *inputs,
            "--generate-hashes",
            "--universal",
            "--python-version",
            PYTHON_VERSION,
            "--custom-compile-command",
            "make bundle",
            "--quiet",
            "--output-file",
            "compiled.txt",
        ]
        try:
            result = subprocess.run(  # noqa: S603 - uv, with arguments built here
                command, cwd=work, capture_output=True, text=True, timeout=600, check=False
            )
        except FileNotFoundError as error:
            raise BundleError(f"uv is not installed ({uv}): run `make install`") from error
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            detail = " ".join(line.strip() for line in lines[-6:])
            raise BundleError(
                f"cannot resolve requirements.txt with {EXTRA_REQUIREMENTS} together "
                f"(a version conflict, a typo, or no access to the package index): {detail}"
            )
        return (work / "compiled.txt").read_text()


def write_zip(path: Path, files: Mapping[str, bytes]) -> str:
    """Write `files` (name -> contents) to a deterministic zip at `path`; return its SHA-256.

    Sorted names, one fixed timestamp, mode 0644: the bytes depend on the contents only.
    The zip is written beside `path` and moved into place, so a reader never sees half of it.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so that the mode below is read
            info.external_attr = 0o100644 << 16
            archive.writestr(info, files[name], compresslevel=9)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    return hashlib.sha256(data).hexdigest()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(
    handler_modules: Sequence[str],
    root: Path = ROOT,
    output: Path | None = None,
    requirements: str | None = None,
) -> Bundle:
    """Build the bundle of the project at `root` into `output` (root/dist/function-source.zip)
    and write its manifest beside it.

    The user's requirements are `root/requirements-handlers.in`, when it exists.
    `requirements` (already compiled text) skips the compilation, for tests of the file set.
    """
    output = output or root / OUTPUT.relative_to(ROOT)
    modules = tuple(dict.fromkeys(handler_modules))
    sources = source_files(modules, root)
    pinned = root / "requirements.txt"
    extra = root / EXTRA_REQUIREMENTS
    if requirements is None:
        requirements = compile_requirements(pinned, extra if extra.is_file() else None)
    contents = {name: path.read_bytes() for name, path in sources.items()}
    contents["requirements.txt"] = requirements.encode()
    sha256 = write_zip(output, contents)
    # What Terraform checks for staleness, by path relative to the project root.
    inputs = {name: _digest(path) for name, path in sources.items()}
    inputs["requirements.txt"] = _digest(pinned)
    if extra.is_file():
        inputs[EXTRA_REQUIREMENTS] = _digest(extra)
    bundle = Bundle(output, sha256, modules, tuple(sorted(contents)), inputs)
    manifest = output.with_name(MANIFEST)
    manifest.write_text(json.dumps(bundle.manifest(), indent=2) + "\n")
    return bundle


def handler_modules_from_tfvars(path: Path = TFVARS) -> list[str]:
    """`handler_modules` as terraform.tfvars sets it; [] when the file or the setting is absent."""
    if not path.is_file():
        return []
    import hcl2  # a development dependency: only `make bundle` needs it

    with path.open() as handle:
        try:
            parsed = hcl2.load(handle)
        except Exception as error:  # any parse failure is the user's file to fix
            raise BundleError(f"cannot read {path}: {error}") from error
    value = parsed.get("handler_modules", [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BundleError(f"{path}: handler_modules must be a list of strings")
    return [item[1:-1] if item[:1] == item[-1:] == '"' else item for item in value]


def _split(modules: Iterable[str]) -> list[str]:
    return [name for text in modules for name in re.split(r"[\s,]+", text) if name]


def main(argv: list[str] | None = None) -> int:
    """`python -m stripe_ledger.bundle`: build dist/function-source.zip, print one line."""
    parser = argparse.ArgumentParser(
        prog="python -m stripe_ledger.bundle",
        description="Write the function's source zip (what Terraform deploys).",
    )
    parser.add_argument(
        "--handler-modules",
        action="append",
        default=None,
        help="handler modules, comma- or space-separated (default: terraform.tfvars's)",
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the project (default: this)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.handler_modules is None:
            modules = handler_modules_from_tfvars(root / TFVARS.relative_to(ROOT))
        else:
            modules = _split(args.handler_modules)
        bundle = build(modules, root)
    except BundleError as error:
        print(f"make bundle: {error}", file=sys.stderr)
        return 1
    shipped = ", ".join(bundle.handler_modules) or "none"
    print(
        f"wrote {os.path.relpath(bundle.zip_path)} ({len(bundle.files)} files, handler modules: "
        f"{shipped}, sha256 {bundle.sha256[:12]})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
