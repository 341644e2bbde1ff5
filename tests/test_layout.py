"""The package's shape (docs/design.md): names line up across the layers, commands only wire, the core stays free
of the launcher, files and functions stay small, docstrings cite the project's own docs, and `--help` is fast."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import typer

from videoalign.cli import app

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "videoalign"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def _commands(group, path=()):
    """(path of names, click command) of every leaf subcommand, and of groups that run on their own."""
    for name, cmd in group.commands.items():
        here = (*path, name)
        if hasattr(cmd, "commands"):
            if cmd.invoke_without_command:  # `bench speed` runs the suite
                yield here, cmd
            yield from _commands(cmd, here)
        else:
            yield here, cmd


def test_every_subcommand_has_its_module_recipes_and_test():
    """`videoalign a b c` -> videoalign/commands/a/b_c.py, tests/commands/a/test_b_c.py, recipes/debug/a_b_c.yaml,
    and a real-size recipe folder recipes/a/ (recipes/<command>/ for top-level commands). So `videoalign dpo` ->
    commands/dpo.py, tests/commands/test_dpo.py, recipes/debug/dpo.yaml, recipes/dpo/; `videoalign bench speed dpo`
    -> commands/bench/speed_dpo.py, tests/commands/bench/test_speed_dpo.py, recipes/debug/bench_speed_dpo.yaml."""
    found = dict(_commands(typer.main.get_command(app)))
    names = {" ".join(p) for p in found}
    assert {"score", "train-reward", "relabel", "dpo", "rwr", "train-latent-rm", "guide", "bench reward",
            "bench winrate", "bench speed", "bench speed score", "bench speed relabel", "bench speed train-reward",
            "bench speed dpo", "bench speed guide"} <= names
    missing = []
    for path in found:
        parts = [p.replace("-", "_") for p in path]
        folder, leaf = parts[:1] if len(parts) > 1 else [], "_".join(parts[1:]) if len(parts) > 1 else parts[0]
        expected = [PACKAGE / "commands" / Path(*folder) / f"{leaf}.py",
                    REPO / "tests" / "commands" / Path(*folder) / f"test_{leaf}.py",
                    REPO / "recipes" / "debug" / f"{'_'.join(parts)}.yaml",
                    REPO / "recipes" / parts[0]]
        missing += [str(p.relative_to(REPO)) for p in expected if not p.exists()]
    assert not missing, f"subcommands without their module, test or recipes: {missing}"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def test_commands_only_wire_and_never_import_each_other():
    problems = []
    for path in sorted((PACKAGE / "commands").rglob("*.py")):
        me = ".".join(path.relative_to(REPO).with_suffix("").parts)
        for name in _imports(path):
            if name.startswith("videoalign.commands.") and not me.startswith(name) and name != me:
                problems.append(f"{path.relative_to(REPO)} imports {name}")
    assert not problems, problems


def test_the_core_does_not_import_the_launcher():
    """Only distributed.py (and trainer.py through it) know accelerate and torch.distributed (style rule 5)."""
    allowed = {"distributed.py", "trainer.py"}
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("commands", "cli") or str(rel) in allowed:
            continue
        bad = [n for n in _imports(path) if n.split(".")[0] == "accelerate" or n.startswith("torch.distributed")]
        problems += [f"{rel} imports {n}" for n in bad]
    assert not problems, problems


def test_files_and_functions_stay_small():
    long_files, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(REPO)
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert not long_files, long_files
    assert not long_functions, long_functions


CITATION = re.compile(r"docs/([a-z_]+\.md)(?:, ([A-Z][A-Za-z0-9 .:/+-]*[A-Za-z0-9]))?")


def test_the_package_cites_its_own_docs_and_their_headings_exist():
    """No docstring or comment cites a document outside the repository; `docs/<file>.md, <Heading>` names a file of
    docs/ and one of its `##` headings."""
    headings = {}
    for doc in (REPO / "docs").glob("*.md"):
        headings[doc.name] = {line[3:].strip() for line in doc.read_text(encoding="utf-8").splitlines()
                              if line.startswith("## ")}
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(REPO)
        if "REFERENCE" in text:
            problems.append(f"{rel} cites REFERENCE.md, which is not in the repository")
        for file, heading in CITATION.findall(text):
            if file not in headings:
                problems.append(f"{rel} cites docs/{file}, which does not exist")
            elif heading and not any(heading.startswith(h) for h in headings[file]):
                problems.append(f"{rel} cites docs/{file}, {heading!r}: no such heading")
    assert not problems, problems


def test_help_does_not_import_torch():
    code = ("import sys; from videoalign.cli import app; import typer; typer.main.get_command(app); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


def test_every_option_comes_from_a_documented_field():
    """Each option of each command is a config field with a `#:` comment (its help), shows its default, and no
    option is a rename: `--x-y` is the field `x_y` (aliases aside: -o, -h)."""
    problems = []
    for path, cmd in _commands(typer.main.get_command(app)):
        for param in cmd.params:
            if param.name in ("recipe", "set_", "help", "ctx"):
                continue
            flags = [o for o in param.opts if o.startswith("--")]
            key = param.name.replace("__", ".")
            if flags and flags[0] != "--" + key.replace("_", "-"):
                problems.append(f"{' '.join(path)}: {flags[0]} is not the field {key}")
            if not (param.help or "").strip():
                problems.append(f"{' '.join(path)}: {key} has no #: comment")
    assert not problems, problems
