"""Checks for .ci/validate.sh that no schema can make: that action.yml declares the inputs
the binary reads, and that the GitLab component's inputs are typed, described and used.
Also splits a component template into its two YAML documents and renders its jobs the
way GitLab interpolates `$[[ inputs.X ]]`.

usage: shipcheck.py action-inputs ACTION_YML
       shipcheck.py split TEMPLATE OUT_BASE      (writes OUT_BASE.{spec,jobs,rendered}.yml)
       shipcheck.py component-inputs TEMPLATE
       shipcheck.py break-spec SPEC_YML OUT      (a negative control for the validator)
"""

import json
import re
import sys
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
INTERPOLATION = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]")
# What the component's required inputs are given when its jobs are rendered for checking.
SAMPLE_INPUTS = {"deploy_job": "deploy"}


def load(text):
    return YAML(typ="safe", pure=True).load(text)


def dump(data, path):
    # JSON is YAML: no formatting question can change what is validated.
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def binary_inputs():
    """The INPUT_* names in src/env.rs, as action input names, and the command-only ones."""
    env = (ROOT / "src/env.rs").read_text()
    names = {n.lower() for n in re.findall(r'"INPUT_([A-Z0-9-]+)"', env)}
    action = (ROOT / "src/cli/action.rs").read_text()
    only = {
        name: re.findall(r'"([a-z]+)"', commands)
        for name, commands in re.findall(
            r'\(\s*env::INPUT_[A-Z_]+,\s*"([a-z-]+)",\s*"--[a-z-]+",\s*&\[([^\]]*)\],?\s*\)', action
        )
    }
    commands = re.findall(r'^\s+"([a-z ]+)",$', action.split("pub const COMMANDS", 1)[1].split("];", 1)[0], re.M)
    return names, only, commands


def action_inputs(path):
    meta = load(Path(path).read_text())
    inputs = meta.get("inputs") or {}
    declared = set(inputs)
    names, only, commands = binary_inputs()
    problems = []
    if declared != names:
        problems.append(
            f"action.yml declares {sorted(declared)}, the binary reads {sorted(names)}: "
            f"missing {sorted(names - declared)}, unknown {sorted(declared - names)}"
        )
    if not only:
        problems.append("found no command-only inputs in src/cli/action.rs")
    for name, command in only.items():
        default = (inputs.get(name) or {}).get("default")
        if default not in (None, ""):
            # The runner sets every input that has a default, and the binary rejects a
            # command-only input given to another command.
            problems.append(f"input {name} (command {command} only) must have no default, has {default!r}")
    default_command = (inputs.get("command") or {}).get("default")
    if default_command not in commands:
        problems.append(f"default command {default_command!r} is not one of {commands}")
    if (inputs.get("github-token") or {}).get("default") != "${{ github.token }}":
        problems.append("github-token must default to ${{ github.token }}")
    for name, spec in inputs.items():
        if not (spec or {}).get("description"):
            problems.append(f"input {name} has no description")
    if problems:
        fail("\n".join(problems))
    print(f"{len(declared)} inputs match src/env.rs; command-only inputs without defaults: {sorted(only)}")


def halves(path):
    text = Path(path).read_text()
    parts = re.split(r"^---[ \t]*$", text, maxsplit=1, flags=re.M)
    if len(parts) != 2:
        fail(f"{path}: no --- line between the spec header and the jobs")
    spec, jobs = load(parts[0]), load(parts[1])
    if not isinstance(spec, dict) or set(spec) != {"spec"}:
        fail(f"{path}: the first document must hold `spec:` alone")
    return spec, jobs


def render(node, values):
    """GitLab interpolates on the loaded YAML: a string that is one interpolation takes the
    input's value (with its type); inside other text the value is spliced in as text."""
    if isinstance(node, dict):
        return {render(k, values): render(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [render(v, values) for v in node]
    if isinstance(node, str):
        whole = INTERPOLATION.fullmatch(node.strip())
        if whole:
            return values[whole.group(1)]
        return INTERPOLATION.sub(lambda m: str(values[m.group(1)]), node)
    return node


def split(path, base):
    spec, jobs = halves(path)
    dump(spec, f"{base}.spec.yml")
    dump(jobs, f"{base}.jobs.yml")
    inputs = spec["spec"].get("inputs") or {}
    values = {}
    for name, meta in inputs.items():
        meta = meta or {}
        if name in SAMPLE_INPUTS:
            values[name] = SAMPLE_INPUTS[name]
        elif "default" in meta:
            values[name] = meta["default"]
        else:
            fail(f"{path}: required input {name} has no sample value in shipcheck.py")
    try:
        dump(render(jobs, values), f"{base}.rendered.yml")
    except KeyError as e:
        fail(f"{path}: the jobs use an undeclared input {e}")


def component_inputs(path):
    spec, jobs = halves(path)
    inputs = spec["spec"].get("inputs") or {}
    used = set(INTERPOLATION.findall(Path(path).read_text().split("\n---", 1)[1]))
    problems = []
    for name, meta in inputs.items():
        meta = meta or {}
        if "type" not in meta:
            problems.append(f"input {name} has no type")
        if not meta.get("description"):
            problems.append(f"input {name} has no description")
        if "options" in meta and meta.get("default") not in meta["options"]:
            problems.append(f"input {name}: default {meta.get('default')!r} is not one of its options")
        if "regex" in meta and "default" in meta and not re.search(meta["regex"], meta["default"]):
            problems.append(f"input {name}: default {meta['default']!r} does not match {meta['regex']}")
    for name in sorted(set(inputs) - used):
        problems.append(f"input {name} is declared but no job uses it")
    for name in sorted(used - set(inputs)):
        problems.append(f"$[[ inputs.{name} ]] is used but not declared")
    for name in ("stage", "environment", "backend", "image", "deploy_job", "mode"):
        if name not in inputs:
            problems.append(f"input {name} is missing")
    if problems:
        fail("\n".join(problems))
    print(f"{len(inputs)} inputs, all typed, described and used")


def break_spec(spec_path, out):
    spec = load(Path(spec_path).read_text())
    name, meta = next((n, m) for n, m in spec["spec"]["inputs"].items() if m.get("type") == "string")
    meta["default"] = 5
    dump(spec, out)


def main(argv):
    commands = {
        "action-inputs": action_inputs,
        "split": split,
        "component-inputs": component_inputs,
        "break-spec": break_spec,
    }
    if len(argv) < 2 or argv[1] not in commands:
        fail(__doc__)
    commands[argv[1]](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
