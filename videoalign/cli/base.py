"""The CLI's shared parts: the Typer apps, the common options, and config resolution and error handling.

Every command resolves its config as defaults < `--recipe FILE.yaml` < flags < `--set key=value` (see
config.py) and hands it to `commands/<cmd>.py`. Errors in the input exit with code 2 and one line naming
the file or key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="videoalign",
    help="Score, train and align text-to-video models with VideoReward (VideoAlign, arXiv 2501.13918).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
bench_app = typer.Typer(help="Benchmarks that record their figures as JSON.", no_args_is_help=True)
speed_app = typer.Typer(help="Speed and memory benchmarks: all of them with targets (no subcommand), or one.")
bench_app.add_typer(speed_app, name="speed")
app.add_typer(bench_app, name="bench")

ModelOpt = typer.Option(None, help="Hub id, checkpoint folder, or tiny-random.")
BaseModelOpt = typer.Option(None, help="Base Qwen2-VL (hub id or folder), for offline use.")
StepOpt = typer.Option(None, help="checkpoint-<step> to load; default the largest.")
DtypeOpt = typer.Option(None, help="auto, float32, bfloat16 or float16.")
DeviceOpt = typer.Option(None, help="auto, cpu, cuda or cuda:N.")
BatchOpt = typer.Option(None, help="Videos per forward pass.")
WorkersOpt = typer.Option(None, help="Decoding threads running ahead of the model.")
RecipeOpt = typer.Option(None, "--recipe", help="YAML recipe with config keys (see recipes/).")
SetOpt = typer.Option(None, "--set", help="Override any config key: --set key=value (repeatable).")
DataOpt = typer.Option(None, "--data", help="Pair file: relabel's pairs JSONL or a reference pair CSV.")
AlignOutOpt = typer.Option(None, "--output-dir", "-o", help="metrics.jsonl, checkpoints/, samples/, final/.")
GenModelOpt = typer.Option(None, help="diffusers text-to-video model: hub id, folder or tiny-random.")
MaxStepsOpt = typer.Option(None, help="Stop after this many optimiser steps.")
AccumOpt = typer.Option(None, help="Micro-steps per optimiser step.")
LrOpt = typer.Option(None, "--lr", help="Learning rate (paper: 5e-6).")
ResumeOpt = typer.Option(None, "--resume", help="Continue from the newest checkpoint.")
MergeOpt = typer.Option(None, "--merge", help="Also save the pipeline with the LoRA fused in (merged/).")


def _resolve(cls, recipe: Optional[Path], flags: dict, overrides: Optional[list[str]]):
    """Build the config or exit 2 with the reason."""
    from videoalign.config import ConfigError, build_config, load_recipe, parse_overrides

    try:
        layers = [load_recipe(recipe) if recipe else {}, {k: v for k, v in flags.items() if v is not None},
                  parse_overrides(overrides)]
        return build_config(cls, *layers)
    except ConfigError as err:
        _fail(str(err))


def _fail(message: str, code: int = 2):
    from videoalign.log import error_line

    error_line(message)
    raise typer.Exit(code)


def _guard(fn, *args):
    """Run a command; user-input errors become one line and exit 2, without a traceback."""
    from videoalign.log import setup_logging

    from videoalign.distributed import shutdown

    setup_logging()
    try:
        return fn(*args)
    except (ValueError, FileNotFoundError) as err:  # DataError, CheckpointError, VideoError, ConfigError
        _fail(str(err).splitlines()[0] if str(err) else err.__class__.__name__)
    finally:
        shutdown()
