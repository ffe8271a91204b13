"""Multi-process training plumbing: ``torchrun`` environment, process groups, shared decisions.

``torchrun --nproc_per_node=N -m noether_control train ...`` starts N copies of the command with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; :func:`setup` turns that into a process group (NCCL on
CUDA, gloo on the CPU). Without those variables everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: ``rank`` of ``world_size``, on ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every file and shows the progress bar."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether ``torchrun`` started this process as part of a multi-process job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> Distributed:
    """Join the ``torchrun`` process group if there is one; pick this rank's device.

    On CUDA each process takes ``cuda:LOCAL_RANK``; on the CPU all use the CPU.
    """
    if not launched_by_torchrun():
        return Distributed(0, 1, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def teardown(job: Distributed) -> None:
    """Leave the process group (no-op for a single process)."""
    if job.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(job: Distributed, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. its run directory)."""
    if not job.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_processes(job: Distributed, value: torch.Tensor) -> torch.Tensor:
    """Average a tensor over all processes (a detached copy; identity for one process)."""
    value = value.detach().clone()
    if job.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= job.world_size
    return value


def barrier(job: Distributed) -> None:
    """Wait for every process (no-op for one)."""
    if job.enabled:
        dist.barrier()


def average_gradients(parameters: list[torch.Tensor]) -> None:
    """All-reduce (mean) the gradients of ``parameters`` over a ``torchrun`` job; no-op alone.

    The Noether meta steps call the model's verbs directly rather than through the DDP wrapper
    (whose hooks only sync its own ``forward``), so the gradients are averaged here.
    """
    if not (dist.is_available() and dist.is_initialized()) or int(
        os.environ.get("WORLD_SIZE", "1")
    ) < 2:
        return
    world = dist.get_world_size()
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
        parameter.grad /= world
