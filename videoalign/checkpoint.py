"""Training checkpoints: trainable tensors, optimiser, scheduler, every rank's RNG, the step; resume from them.

    <output_dir>/checkpoints/step-<N>/trainable.safetensors   requires_grad tensors by name
                                     optimizer.pt, scheduler.pt, rng-rank<r>.pt, state.json
    <output_dir>/resolved_recipe.yaml                          the merged config of the run

A checkpoint folder is written under a temp name and renamed when complete, so a kill never leaves a half
checkpoint; `latest` finds the newest complete one. The data position is the step itself: the data order is
a deterministic function of (seed, epoch), so step N tells which pairs come next. The files hold whole tensors
under every launcher (FSDP2 shards are gathered before saving and cut again on load), so a checkpoint resumes
under another launcher with the same global batch.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch


def rng_state() -> dict:
    """All RNG states as tensors and plain values, so they load with weights_only=True."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step}"


def latest(output_dir: Path) -> Path | None:
    """The complete checkpoint with the largest step, if any."""
    root = output_dir / "checkpoints"
    done = [d for d in root.glob("step-*") if (d / "state.json").is_file()] if root.is_dir() else []
    return max(done, key=lambda d: int(d.name.split("-")[1]), default=None)


def read_state(path: Path) -> dict:
    """A checkpoint's state.json (step, world size, what it was written for)."""
    return json.loads((path / "state.json").read_text())


def save(output_dir: Path, step: int, trainable: dict, optimizer, scheduler, extra: dict, rank: int, world: int,
         barrier, tensors: dict | None = None) -> Path:
    """Every rank writes its RNG; rank 0 writes the rest into a temp folder and renames it when complete.
    `tensors` (e.g. EMA weights) go to extra.safetensors. `optimizer` is the optimiser or its state dict; under
    FSDP2 the caller passes whole tensors and state (distributed.full_tensors, full_optimizer_state), gathered by
    every rank, so the files are the same whatever the launcher."""
    from safetensors.torch import save_file

    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    barrier()
    if rank == 0:
        save_file({k: v.contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
        if tensors:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "extra.safetensors"))
        torch.save(optimizer if isinstance(optimizer, dict) else optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "world_size": world, **extra}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    barrier()
    return final


def load(path: Path, model, optimizer, scheduler, rank: int, place=None) -> dict:
    """Restore trainable tensors (strictly: every trainable name must be present), optimiser, scheduler and this
    rank's RNG. Returns state.json, with the tensors of extra.safetensors under "tensors" when there are any.
    `place(full, like)`, if given, turns a whole saved tensor into what the parameter `like` (or its optimiser
    state) holds: this rank's shard under FSDP2 (distributed.shard_like)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path / "trainable.safetensors"))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit the model (missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}); resume with the recipe it was written with")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(place(tensors[name], p) if place else tensors[name].to(p.device, p.dtype))
    optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    if place:  # the state of packed parameter i: its tensors of the parameter's shape (Adam's moments) are placed
        ordered = [p for group in optimizer.param_groups for p in group["params"]]
        for i, state in optimizer_state["state"].items():
            optimizer_state["state"][i] = {k: place(v, ordered[i]) if torch.is_tensor(v) and v.dim() and
                                           v.shape == ordered[i].shape else v for k, v in state.items()}
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    state = read_state(path)
    rng_file = path / f"rng-rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    if (path / "extra.safetensors").is_file():
        state["tensors"] = load_file(str(path / "extra.safetensors"))
    return state
