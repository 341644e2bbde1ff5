"""The CLI generated from the config dataclasses: --version, defaults in --help, flags = fields, errors in one line."""

from __future__ import annotations

from typer.testing import CliRunner

from videoalign import __version__
from videoalign.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"videoalign {__version__}"


def test_help_shows_each_fields_doc_and_default():
    result = runner.invoke(app, ["dpo", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "DPO beta, for the per-sample mean error" in text and "[default: 5000.0]" in text
    assert "--lora.rank" in text and "[default: 64]" in text and "--overwrite" in text
    assert "<str>" not in text


def test_a_flag_and_set_name_the_same_key_and_are_checked_alike():
    for args in (["--beta", "oops"], ["--set", "beta=oops"]):
        result = runner.invoke(app, ["dpo", "--data", "x.jsonl", *args])
        assert result.exit_code == 2
        assert "config key 'beta': expected a number, got 'oops'" in result.output


def test_null_reaches_an_optional_number(tmp_path):
    """`--max-grad-norm null` turns clipping off, as `--set max_grad_norm=null` does."""
    from videoalign.config import build_config
    from videoalign.gen.settings import AlignConfig

    assert build_config(AlignConfig, {"data": "x.jsonl", "max_grad_norm": None}).max_grad_norm is None
    result = runner.invoke(app, ["dpo", "--data", str(tmp_path / "missing.jsonl"), "--max-grad-norm", "null",
                                 "--device", "cpu", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 2 and "missing.jsonl: no such file" in result.output  # null was accepted
