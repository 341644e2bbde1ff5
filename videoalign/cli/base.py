"""The CLI's shared parts: the Typer apps, commands generated from config dataclasses, config resolution and errors.

Each setting is declared once, as a field of the command's config dataclass with a `#:` comment (config.py); its
option, help text, metavar and shown default come from that field here. A nested section's fields become dotted
options (`--lora.rank`, `--reward.model`). Values reach the config as the user typed them and are checked there,
so a flag, a recipe key and `--set key=value` are validated alike: defaults < `--recipe` < flags < `--set`.
A few short aliases exist where users expect them (`-o`). Config modules do not import torch, so `--help` is fast.

Errors in the input exit with code 2 and one line naming the file or key and the fix; no traceback
(VIDEOALIGN_DEBUG=1 shows one).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import types
import typing
from pathlib import Path
from typing import Literal, Optional, Union, get_args, get_origin

import typer

app = typer.Typer(
    name="videoalign",
    help="Score, train and align text-to-video models with VideoReward (VideoAlign, arXiv 2501.13918).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
bench_app = typer.Typer(help="Benchmarks that record their figures as JSON.", no_args_is_help=True)
speed_app = typer.Typer(help="Speed and memory benchmarks: all of them with targets (no subcommand), or one.")
bench_app.add_typer(speed_app, name="speed")
app.add_typer(bench_app, name="bench")

#: short aliases of options, by field name
ALIASES = {"output": ["-o"], "output_dir": ["-o"], "learning_rate": ["--lr"]}
_NULLS = ("null", "none", "None", "~")


def _version(value: bool) -> None:
    if value:
        from videoalign import __version__

        typer.echo(f"videoalign {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")):
    """Score, train and align text-to-video models with VideoReward (VideoAlign, arXiv 2501.13918)."""


# -- field docs and types ----------------------------------------------------------------------------------------

def field_docs(cls: type) -> dict[str, str]:
    """{field: its `#:` comment} of a dataclass, a subclass's comment winning over its bases'."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines:
            text = line.strip()
            if text.startswith("#:"):
                pending.append(text[2:].strip())
            elif ":" in text and not text.startswith(("#", "def ", "class ", "@", '"', "'")) and pending:
                docs[text.split(":", 1)[0].strip()] = " ".join(pending)
                pending = []
            elif not text.startswith("#:"):
                pending = []
    return docs


def _shown(value) -> str | None:
    """How a default is shown in --help (None: not shown)."""
    if value is None or value == [] or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _base_type(ftype):
    """(the type without None, whether None is allowed)."""
    if get_origin(ftype) in (Union, types.UnionType):
        args = [a for a in get_args(ftype) if a is not type(None)]
        return (args[0] if len(args) == 1 else ftype), type(None) in get_args(ftype)
    return ftype, False


def _metavar(ftype) -> str:
    if get_origin(ftype) is Literal:
        return "[" + "|".join(map(str, get_args(ftype))) + "]"
    if get_origin(ftype) in (list, tuple):
        return _metavar(get_args(ftype)[0]) if get_args(ftype) else "TEXT"
    return {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}.get(ftype, "TEXT")


@dataclasses.dataclass
class _Option:
    key: str  # dotted config key
    param: str  # python parameter name
    annotation: object
    info: object  # typer.Option / typer.Argument
    nullable: bool  # "null" on the command line means None


def _options(cls: type, positional: tuple[str, ...], prefix: str = "", panel: str | None = None) -> list[_Option]:
    from videoalign.config import field_defaults

    hints = typing.get_type_hints(cls)
    docs, defaults = field_docs(cls), field_defaults(cls)
    out: list[_Option] = []
    nested = []
    for f in dataclasses.fields(cls):
        ftype, nullable = _base_type(hints[f.name])
        key = prefix + f.name
        if dataclasses.is_dataclass(ftype):
            nested.append((f, ftype, key))
            continue
        doc, default = docs.get(f.name, ""), defaults[f.name]
        param = key.replace(".", "__")
        if key in positional:
            info = typer.Argument(None, help=doc, metavar=f.name.upper(), show_default=False)
            out.append(_Option(key, param, Optional[str], info, False))
            continue
        flag = "--" + key.replace("_", "-")
        names = [flag, *ALIASES.get(key, [])]
        # the real default, for --help; whether the user gave the option is read from click's parameter source
        common = dict(help=doc, rich_help_panel=panel, show_default=_shown(default) is not None)
        if ftype is bool:
            info = typer.Option(bool(default), f"{flag}/--no-{flag[2:]}", *ALIASES.get(key, []), metavar="", **common)
            out.append(_Option(key, param, bool, info, False))
        elif get_origin(ftype) in (list, tuple):
            info = typer.Option([str(v) for v in default or []] or None, *names, metavar=_metavar(ftype), **common)
            out.append(_Option(key, param, Optional[list[str]], info, nullable))
        else:
            info = typer.Option(None if default is None else str(default), *names, metavar=_metavar(ftype),
                                **common)
            out.append(_Option(key, param, Optional[str], info, nullable and ftype is not str))
    for f, ftype, key in nested:
        out += _options(ftype, positional, prefix=key + ".", panel=f"{key} (section)")
    return out


# -- commands ----------------------------------------------------------------------------------------------------

def _help(module) -> str:
    """A command's help: its module docstring's first paragraph (after the command name), then its usage lines (the
    last paragraph, when it names videoalign), kept as written."""
    paragraphs = (module.__doc__ or "").strip().split("\n\n")
    summary = " ".join(paragraphs[0].split())
    summary = summary.split("`: ", 1)[1] if summary.startswith("`") and "`: " in summary else summary
    usage = paragraphs[-1] if len(paragraphs) > 1 and "videoalign " in paragraphs[-1] else ""
    return summary + ("\n\n\b\n" + usage if usage else "")


def register(target: typer.Typer, name: str | None, module_name: str, config: str, run: str = "run",
             positional: tuple[str, ...] = (), callback: bool = False) -> None:
    """Add the command `name` to `target`: its options from `module_name`'s `config` dataclass, then `run(cfg)`.
    `callback=True` makes it the group's own command (`bench speed` with no subcommand)."""
    module = importlib.import_module(module_name)
    cls = getattr(module, config)
    options = _options(cls, positional)

    def command(ctx: typer.Context, **values):
        if callback and ctx.invoked_subcommand is not None:
            return
        flags = {}
        for opt in options:
            value = values.get(opt.param)
            source = ctx.get_parameter_source(opt.param)
            if source is None or source.name != "COMMANDLINE":  # Typer may vendor click: compare by name
                continue
            if isinstance(value, tuple):
                value = list(value)
            flags[opt.key] = None if opt.nullable and value in _NULLS else value
        cfg = resolve(cls, values.get("recipe"), flags, values.get("set_"))
        raise typer.Exit(guard(getattr(module, run), cfg))

    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for opt in options:
        params.append(inspect.Parameter(opt.param, inspect.Parameter.KEYWORD_ONLY, default=opt.info,
                                        annotation=opt.annotation))
    params.append(inspect.Parameter("recipe", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                    default=typer.Option(None, "--recipe", help="YAML recipe of config keys "
                                                         "(recipes/); flags and --set override it.")))
    params.append(inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]],
                                    default=typer.Option(None, "--set", help="Override any config key: --set "
                                                         "key=value (repeatable; dotted keys for sections).")))
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = (name or "callback").replace("-", "_")
    command.__doc__ = _help(module)
    command.config = cls  # the command's config dataclass (tests read it off the click command's callback)
    if callback:
        target.callback(invoke_without_command=True, help=command.__doc__)(command)
    else:
        target.command(name, help=command.__doc__)(command)


def resolve(cls, recipe: Optional[Path], flags: dict, overrides: Optional[list[str]]):
    """Build the config or exit 2 with the reason."""
    from videoalign.config import ConfigError, build_config, load_recipe, parse_overrides

    try:
        layers = [load_recipe(recipe) if recipe else {}, flags, parse_overrides(overrides)]
        return build_config(cls, *layers)
    except ConfigError as err:
        fail(str(err))


def fail(message: str, code: int = 2):
    from videoalign.log import error_line

    error_line(message)
    raise typer.Exit(code)


def guard(fn, *args):
    """Run a command; user-input errors become one line and exit 2, without a traceback."""
    from videoalign.distributed import shutdown
    from videoalign.log import setup_logging

    setup_logging()
    try:
        return fn(*args)
    except (ValueError, FileNotFoundError) as err:  # DataError, CheckpointError, VideoError, ConfigError
        if os.environ.get("VIDEOALIGN_DEBUG"):
            raise
        fail(str(err).splitlines()[0] if str(err) else err.__class__.__name__)
    finally:
        shutdown()


def run_cli(argv: list[str]) -> int:
    """Run `videoalign <argv>` in this process and return its exit code (benchmarks time real commands this way)."""
    try:
        result = app([str(a) for a in argv], prog_name="videoalign", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:
        if hasattr(exc, "exit_code"):
            return int(exc.exit_code)
        raise
    return int(result or 0)
