"""Entry point for `python -m videoalign` and `accelerate launch -m videoalign <cmd> ...`."""

from videoalign.cli import app

if __name__ == "__main__":
    app()
