"""Command wiring: one module per subcommand (see videoalign/cli)."""
