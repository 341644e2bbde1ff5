"""Entry point for `python -m videoalign` and `accelerate launch -m videoalign <cmd> ...`."""

import sys


def main() -> None:
    from videoalign.distributed import relaunch_cpu_ranks, requested_cpu_processes

    ranks = requested_cpu_processes()
    if ranks:  # `accelerate launch --num_processes N --cpu`: start the N ranks accelerate would not
        sys.exit(relaunch_cpu_ranks(ranks, sys.argv[1:]))
    from videoalign.cli import app

    app(prog_name="videoalign")


if __name__ == "__main__":
    main()
