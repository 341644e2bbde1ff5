"""Every `videoalign ...` line that the README, docs/ and the recipes' header comments show parses: the command
exists, every option is one of its options, every `--set key` is one of its config keys, and every recipe file it
names exists. (Running them needs real models; the debug recipes run in the command tests.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from videoalign.cli import app

REPO = Path(__file__).resolve().parents[1]


def _shown_lines() -> list[tuple[str, str]]:
    """(where, command line) of every videoalign invocation in the README's and docs' code blocks and in recipe
    header comments."""
    found = []
    for doc in [REPO / "README.md", REPO / "recipes" / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        inside, language = False, ""
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
            if line.startswith("```"):
                inside, language = not inside, line[3:].strip()
                continue
            if inside and language in ("bash", "sh", ""):
                found.append((f"{doc.name}:{n}", line))
    for recipe in sorted((REPO / "recipes").rglob("*.yaml")):
        for n, line in enumerate(recipe.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.startswith("#"):
                break
            found.append((f"{recipe.relative_to(REPO)}:{n}", line.lstrip("# ")))
    out = []
    for where, line in found:
        if line.lstrip().startswith("#"):
            continue
        line = line.split(" #", 1)[0].split(" > ", 1)[0].strip()
        match = re.search(r"(?:^|\s)videoalign ([a-z].*)$", line)
        if not match or "..." in line or "$" in line or "<cmd>" in line:
            continue
        out.append((where, match.group(1).rstrip("\\").strip()))
    return out


LINES = _shown_lines()


def test_the_docs_show_commands():
    assert len(LINES) > 40  # the README's quick starts, the recipes' headers


@pytest.mark.parametrize("where, line", LINES, ids=[w for w, _ in LINES])
def test_a_shown_command_parses(where, line):
    from videoalign.config import ConfigError, _set_path, field_defaults, load_recipe

    args = shlex.split(line)
    cmd = typer.main.get_command(app)
    path = []
    while hasattr(cmd, "commands") and args and args[0] in cmd.commands:
        path.append(args[0])
        cmd = cmd.commands[args.pop(0)]
    assert path, f"{where}: `videoalign {line}` names no command"
    if args and args[0] in ("--help", "-h", "--version"):
        return
    try:
        ctx = cmd.make_context(" ".join(path), list(args), resilient_parsing=False)
    except Exception as exc:  # noqa: BLE001 - click's (maybe vendored) UsageError: the message says what is wrong
        pytest.fail(f"{where}: `videoalign {line}`: {exc}")
    recipe = ctx.params.get("recipe")
    if recipe is not None:
        assert (REPO / recipe).is_file(), f"{where}: recipe {recipe} does not exist"
        load_recipe(REPO / recipe)
    cls = cmd.callback.config  # the config dataclass the command was generated from
    for item in ctx.params.get("set_") or []:
        key = item.split("=", 1)[0]
        try:
            _set_path(cls, field_defaults(cls), key, item.split("=", 1)[1] if "=" in item else None)
        except ConfigError as exc:
            if "unknown config key" in str(exc):
                pytest.fail(f"{where}: --set {key}: {exc}")
