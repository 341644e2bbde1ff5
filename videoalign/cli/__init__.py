"""The `videoalign` command line: one short Typer function per subcommand, heavy imports inside each.

    base.py    the Typer apps, shared options, config resolution (defaults < recipe < flags < --set), errors
    main.py    score, train-reward, relabel, dpo, rwr, train-latent-rm, guide
    bench.py   bench reward, bench winrate, bench speed (the suite) and its five benchmarks
"""

from videoalign.cli import bench, main  # noqa: F401 - importing them registers their commands
from videoalign.cli.base import app

__all__ = ["app"]
