"""The only core module that imports accelerate: build the one Accelerator, shard work, broadcast, shut down.

Commands call `make_accelerator()` once and pass plain values (rank, world size, device) to the core. The
same code path serves one process and `accelerate launch --num_processes N ...`.
"""

from __future__ import annotations

from datetime import timedelta


def make_accelerator(device: str = "auto", **kwargs):
    """An Accelerator with a long collective timeout: ranks of a scoring job can finish hours apart."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    handlers = [InitProcessGroupKwargs(timeout=timedelta(hours=48))]
    return Accelerator(cpu=(device == "cpu"), kwargs_handlers=handlers, **kwargs)


def shard(items: list, rank: int, world: int) -> list:
    """Round-robin shard: rank r takes items r, r+world, ... (balanced when item costs vary smoothly)."""
    return items[rank::world]


def broadcast_from_main(accelerator, value):
    """Rank 0's picklable `value` on every rank (a barrier too)."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def requested_cpu_processes() -> int:
    """N when this process was started by `accelerate launch --num_processes N --cpu` with N > 1, else 0.

    accelerate's CPU launcher starts a single process unless MPI is set up (accelerate 1.x `simple_launcher`),
    so `--num_processes 2 --cpu` would silently run one rank. We read the launcher's own arguments from the
    parent process and start the ranks ourselves (see relaunch_cpu_ranks).
    """
    import os

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("true", "1") or "WORLD_SIZE" in os.environ:
        return 0
    try:
        import psutil

        cmdline = psutil.Process(os.getppid()).cmdline()
    except Exception:  # noqa: BLE001 - no parent information: nothing to do
        return 0
    if "launch" not in cmdline or not any("accelerate" in part for part in cmdline[:3]):
        return 0
    from accelerate.commands.launch import launch_command_parser

    launch_args = cmdline[cmdline.index("launch") + 1:]
    try:
        parsed, _ = launch_command_parser().parse_known_args(launch_args)
    except SystemExit:
        return 0
    if parsed.mpirun_hostfile or not parsed.num_processes or parsed.num_processes <= 1:
        return 0
    return int(parsed.num_processes)


def relaunch_cpu_ranks(num_processes: int, argv: list[str]) -> int:
    """Run `python -m videoalign argv...` as `num_processes` gloo ranks through torch.distributed.run."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ACCELERATE_USE_CPU="true")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}",
           "-m", "videoalign", *argv]
    return subprocess.call(cmd, env=env)


def shutdown() -> None:
    """Destroy the process group, if any, before the interpreter exits: gloo's threads otherwise can abort the
    process at exit ("terminate called without an active exception", exit code -6) after all work is done."""
    import sys

    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
