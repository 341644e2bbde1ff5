"""The only core module that imports accelerate or torch.distributed: build the one Accelerator, shard work,
broadcast, gather sharded (FSDP2) state, shut down.

Commands call `make_accelerator()` once and pass plain values (rank, world size, device) to the core. The
same code path serves one process and `accelerate launch --num_processes N ...`. Under FSDP2 a trainable tensor is a
DTensor holding this rank's shard: `full_tensors` gathers the whole tensors (a collective: every rank calls it) and
`shard_like` cuts a full tensor back into this rank's shard, so checkpoints and exports have one layout whatever
the launcher.
"""

from __future__ import annotations

from datetime import timedelta


def make_accelerator(device: str = "auto", **kwargs):
    """An Accelerator with a long collective timeout: ranks of a scoring job can finish hours apart.

    Two silent accelerate (1.15) behaviours become explicit: under an FSDP launch config on the CPU it would run
    DDP (it takes its FSDP path only on GPU-like devices), so the ranks shard with FSDP2 here as on GPUs
    (recipes/accelerate/fsdp_cpu_debug.yaml); and ranks launched by torchrun that accelerate sees as one process
    each (device auto on a machine without GPUs) would each train alone, so that is an error."""
    import os

    from accelerate import Accelerator
    from accelerate.utils import DistributedType, InitProcessGroupKwargs

    handlers = [InitProcessGroupKwargs(timeout=timedelta(hours=48))]
    accelerator = Accelerator(cpu=(device == "cpu"), kwargs_handlers=handlers, **kwargs)
    launched = int(os.environ.get("WORLD_SIZE", accelerator.num_processes))
    if launched != accelerator.num_processes:
        raise ValueError(f"launched as {launched} processes, but accelerate sees {accelerator.num_processes} "
                         f"(device {device!r} on a machine without GPUs?); on CPUs set device: cpu")
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp and accelerator.distributed_type == DistributedType.MULTI_CPU:
        _fsdp_on_cpu(accelerator)
    return accelerator


def _fsdp_on_cpu(accelerator) -> None:
    """Switch a multi-process CPU (gloo) Accelerator to FSDP2 with the launch config's settings: FSDP2 itself runs on
    CPU tensors and gloo; only accelerate's device check stands in the way. accelerate keeps the distributed type in
    two shared states (AcceleratorState copies PartialState's whenever it is constructed), so both are set."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables `accelerate launch` set from the config
    if plugin.fsdp_version != 2:
        raise ValueError(f"fsdp_version: {plugin.fsdp_version} is not supported; use fsdp_version: 2 (FSDP2)")
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state.update(distributed_type=DistributedType.FSDP, fsdp_plugin=plugin)
    if not accelerator.is_fsdp2:
        raise RuntimeError("could not switch accelerate to FSDP2 on CPU (accelerate internals changed?)")


def is_sharded(accelerator) -> bool:
    """True under FSDP2, where prepared parameters are DTensor shards. FSDP1 (flat parameters) is refused."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return False
    if not accelerator.is_fsdp2:
        raise ValueError("fsdp_version: 1 is not supported; use fsdp_version: 2 (recipes/accelerate/fsdp.yaml)")
    return True


def full_tensors(tensors: dict, main: bool) -> dict:
    """{name: whole tensor} of `tensors` on the main process ({} elsewhere) when any is a DTensor shard (FSDP2):
    each is all-gathered, a collective, so every rank calls this with the same names in the same order; the main
    process keeps CPU copies. Without shards (one process, DDP) `tensors` itself comes back, on every rank."""
    import torch
    from torch.distributed.tensor import DTensor

    if not any(isinstance(t, DTensor) for t in tensors.values()):
        return tensors
    out = {}
    with torch.no_grad():
        for name, t in tensors.items():
            whole = t.full_tensor() if isinstance(t, DTensor) else t
            if main:
                out[name] = whole.detach().cpu()
    return out


def full_optimizer_state(optimizer, main: bool) -> dict:
    """optimizer.state_dict() with its DTensor shards gathered (see full_tensors; a collective under FSDP2), in the
    layout a one-process run saves: what checkpoint.load reads back under any launcher."""
    state = optimizer.state_dict()
    gathered = {i: full_tensors(s, main) for i, s in state["state"].items()}
    if all(gathered[i] is s for i, s in state["state"].items()):
        return state
    return {"state": gathered, "param_groups": state["param_groups"]} if main else {}


def shard_like(full, like):
    """`full` (the whole tensor, on every rank) laid out as `like`: this rank's DTensor shard when `like` is one
    (FSDP2; cut locally, no communication), else `full` itself. The dtype stays `full`'s (an EMA keeps float32)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor):
        return full
    return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None)


def reshard(module) -> None:
    """Register the shards again after forwards without a backward (sampling). FSDP2 keeps the root module's
    gathered parameters after its forward, for the backward; without one, later writes to the shards (an EMA
    swap, the optimiser) would not reach the next forward, and named_parameters() would list the gathered
    tensors. A no-op on a module without FSDP2."""
    from torch.distributed.fsdp import FSDPModule

    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def unsharded_copy(module, state: dict):
    """A plain module of `module`'s own class (FSDP2 swaps in a subclass), holding `state`, its full state dict: for
    save_pretrained on the main process. Built from module.config (diffusers models) on the meta device, so it
    costs no memory beyond `state`."""
    import torch
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        plain = cls.from_config(module.config)
    plain.load_state_dict(state, strict=True, assign=True)
    return plain


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
    except Exception:
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
