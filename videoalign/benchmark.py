"""Measuring helpers shared by the speed benchmarks (`videoalign bench speed ...`): where the figures were measured,
peak memory on the CPU (RSS, and live tensor bytes) and on CUDA, device syncs around timers, call counters.

Speed and memory targets are checked as ratios within one run, never as absolute times (docs/design.md,
Benchmarks).
"""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary


def report(figures: dict, output: str | None) -> None:
    """Print the figures, plus where they were measured (threads, host, python, torch), as JSON and, when `output`
    is set, write them there atomically."""
    from videoalign.data import strict_json, write_json
    from videoalign.log import console, stdout

    figures = {**figures, "torch_threads": torch.get_num_threads(), "host": platform.node(),
               "python": platform.python_version(), "torch": torch.__version__}
    text = json.dumps(strict_json(figures), indent=2)
    if output:
        write_json(output, figures)
        console.print(f"wrote {output}", highlight=False)
    stdout.print(text, markup=False, highlight=False)


def peak_rss_mb() -> float:
    """Peak resident set size of this process (threads included), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's CPU threads set to n (None: unchanged) for the block, then restored: a benchmark run in-process must
    not change the numbers of whatever runs after it (the thread count changes float reduction order)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync(device) -> None:
    """Wait for the device's queued work (CUDA), so a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device_dtype(device: str, dtype: str) -> tuple[torch.device, str]:
    """(torch device, dtype name) of a benchmark's `device` and `dtype` settings; auto = CUDA if there is one,
    bfloat16 on CUDA and float32 on the CPU."""
    name = device
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: no CUDA device is available here; use --device cpu")
    dtype = dtype if dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    return device, dtype


class LiveTensorBytes(TorchDispatchMode):
    """Current and peak bytes of the tensor storages that ops allocate while this mode is active.

    Every aten op's outputs are inspected: a storage that is not one of the op's inputs' and not seen before is a
    new allocation, counted until it is freed (a weakref finalizer on the storage). Views and in-place results
    share an input's storage and add nothing; tensors that existed before the mode was entered are not counted.
    Scratch buffers a kernel allocates and frees inside one op are not seen (torch.profiler's allocator events,
    which do see them, gave peaks within 3% of this on the tiny model).
    """

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._sizes = WeakIdKeyDictionary()  # storage -> [bytes]

    def _freed(self, box: list) -> None:
        self.current -= box[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(x.untyped_storage()) for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)}
        for x in tree_flatten(out)[0]:
            if not isinstance(x, torch.Tensor):
                continue
            storage = x.untyped_storage()
            box = self._sizes.get(storage)
            if box is None and id(storage) not in inputs:
                box = self._sizes[storage] = [storage.nbytes()]
                weakref.finalize(storage, self._freed, box)
                self.current += box[0]
            elif box is not None and box[0] != storage.nbytes():  # resized in place
                self.current += storage.nbytes() - box[0]
                box[0] = storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def warm_cuda(device: torch.device, dtype: torch.dtype) -> None:
    """One small matmul forward and backward, so the cuBLAS workspace, which stays allocated once made, is not
    charged to whichever variant happens to run first."""
    a = torch.ones(64, 64, device=device, dtype=dtype, requires_grad=True)
    (a @ a).sum().backward()
    torch.cuda.synchronize(device)


class CallCounter:
    """Forward calls of a module and backward calls of its blocks (register_full_backward_hook)."""

    def __init__(self, module: torch.nn.Module, blocks):
        self.forwards = self.backwards = 0
        self._handles = [module.register_forward_hook(lambda *_: self._forward())]
        self._handles += [b.register_full_backward_hook(lambda *_: self._backward()) for b in blocks]

    def _forward(self):
        self.forwards += 1

    def _backward(self):
        self.backwards += 1

    def remove(self):
        for h in self._handles:
            h.remove()


