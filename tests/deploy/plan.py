"""Run `terraform plan` offline on the preconditions and validations of terraform/.

No provider can be downloaded here, so the real configuration cannot be planned. Its checks
are plain Terraform, though: this copies variables.tf (validations included), the `locals`
blocks of the files asked for, and the `lifecycle` block of one resource onto Terraform's
built-in `terraform_data`, and plans that. Terraform itself then evaluates the very text of
the conditions and error messages, with the variables a test gives.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy.terraform import TERRAFORM

__all__ = ["Plan", "block_text", "evaluate", "plan_lifecycle"]


def block_text(text: str, header: str, start: int = 0) -> str:
    """The whole block whose first line matches the regex `header` (braces balanced)."""
    match = re.compile(header, re.MULTILINE).search(text, start)
    if match is None:
        raise KeyError(header)
    depth = 0
    for position in range(text.index("{", match.start()), len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[match.start() : position + 1]
    raise ValueError(f"unbalanced block {header}")


def _lifecycle(resource_type: str, name: str) -> str:
    for path in sorted(TERRAFORM.glob("*.tf")):
        text = path.read_text()
        header = rf'^resource "{resource_type}" "{name}" \{{'
        if re.search(header, text, re.MULTILINE):
            resource = block_text(text, header)
            return block_text(resource, r"^\s*lifecycle \{")
    raise KeyError(f"{resource_type}.{name}")


@dataclass(frozen=True)
class Plan:
    """What `terraform plan` said."""

    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def message(self) -> str:
        """The output on one line, so that a test can match a message wrapped by Terraform."""
        return " ".join(re.sub(r"[│╷╵]", " ", self.output).split())


def plan_lifecycle(
    workdir: Path,
    resource: str,
    variables: dict[str, Any],
    *,
    locals_from: tuple[str, ...] = (),
    repo_root: Path | None = None,
) -> Plan:
    """Plan `resource`'s lifecycle checks with `variables` (project_id has a default)."""
    binary = shutil.which("terraform")
    if binary is None:
        raise RuntimeError("terraform is not on PATH: install Terraform >= 1.9")
    resource_type, name = resource.split(".")
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TERRAFORM / "variables.tf", workdir / "variables.tf")
    parts = [f'resource "terraform_data" "check" {{\n{_lifecycle(resource_type, name)}\n}}']
    for file in locals_from:
        parts.append(block_text((TERRAFORM / file).read_text(), r"^locals \{"))
    if repo_root is not None:
        parts.append(f"locals {{\n  repo_root = {json.dumps(str(repo_root))}\n}}")
    (workdir / "main.tf").write_text("\n\n".join(parts) + "\n")
    values = {"project_id": "demo-project-1", **variables}
    (workdir / "terraform.tfvars.json").write_text(json.dumps(values))
    config_file = workdir / "terraformrc"
    config_file.write_text("")
    result = subprocess.run(
        [binary, "plan", "-input=false", "-no-color", "-lock=false"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": str(config_file), "HOME": str(workdir)},
        check=False,
    )
    return Plan(result.returncode, result.stdout + result.stderr)


def evaluate(
    workdir: Path,
    expressions: dict[str, str],
    *,
    variables: dict[str, Any] | None = None,
    locals_from: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The values Terraform gives `expressions` (name -> HCL expression), by applying a
    configuration of outputs only (no provider, local state in `workdir`). With `variables`,
    terraform/variables.tf (validations included) is declared too and given them (project_id
    has a default), so that the expressions may read `var.*`; `locals_from` adds the first
    `locals` block of each file named, so that they may read those `local.*`."""
    binary = shutil.which("terraform")
    if binary is None:
        raise RuntimeError("terraform is not on PATH: install Terraform >= 1.9")
    workdir.mkdir(parents=True, exist_ok=True)
    if variables is not None:
        shutil.copyfile(TERRAFORM / "variables.tf", workdir / "variables.tf")
        values = {"project_id": "demo-project-1", **variables}
        (workdir / "terraform.tfvars.json").write_text(json.dumps(values))
    if locals_from:
        blocks = [block_text((TERRAFORM / f).read_text(), r"^locals \{") for f in locals_from]
        (workdir / "locals.tf").write_text("\n\n".join(blocks) + "\n")
    (workdir / "main.tf").write_text(
        "".join(f'output "{name}" {{\n  value = {text}\n}}\n' for name, text in expressions.items())
    )
    config_file = workdir / "terraformrc"
    config_file.write_text("")
    env = {"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": str(config_file), "HOME": str(workdir)}
    for command in (["apply", "-auto-approve", "-input=false", "-no-color"], ["output", "-json"]):
        result = subprocess.run(
            [binary, *command],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(result.stdout + result.stderr)
    outputs: dict[str, Any] = json.loads(result.stdout)
    return {name: output["value"] for name, output in outputs.items()}
