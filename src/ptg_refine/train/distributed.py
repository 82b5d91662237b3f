"""Multi-process (``torchrun``) support for :func:`ptg_refine.train.fit`.

``fit`` calls :func:`setup` first. Launched by ``torchrun --nproc_per_node N`` (or
``python -m torch.distributed.run``), which sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``, it joins the process group (``nccl`` on CUDA, ``gloo`` on the
CPU) unless the caller already initialized one, and picks ``cuda:LOCAL_RANK`` when CUDA is
available. In a single process it does nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = ["DistInfo", "all_gather_objects", "barrier", "cleanup", "mean_across", "setup"]

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global rank (0 in a single process).
        world_size: number of processes (1 in a single process).
        local_rank: rank on this machine (selects the GPU).
        device: the device this process trains on.
        initialized_here: True when :func:`setup` created the process group (then
            :func:`cleanup` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes checkpoints, logs and progress bars."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ConfigError(f"Environment variable {name}={value!r} is not an integer.") from err


def setup(device: str | torch.device | None, default_device: torch.device) -> DistInfo:
    """Join the process group when launched with ``WORLD_SIZE > 1`` and choose the device.

    Args:
        device: the device asked for by the caller (None: choose).
        default_device: the device to use in a single process when ``device`` is None.

    Returns:
        The :class:`DistInfo` of this process.
    """
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        initialized_here = False
    else:
        world = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        initialized_here = world > 1
    local_rank = _env_int("LOCAL_RANK", rank)

    if device is not None:
        dev = torch.device(device)
        if world > 1 and dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    elif world > 1 and torch.cuda.is_available():
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    elif world > 1:
        dev = torch.device("cpu")
    else:
        dev = default_device
    if world > 1 and dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)

    if initialized_here:
        if not dist.is_available():
            raise ConfigError(
                f"WORLD_SIZE={world} asks for distributed training, but this torch build has no "
                "torch.distributed support."
            )
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world}
        if backend == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
        logger.info("joined process group: rank %d of %d (%s) on %s", rank, world, backend, dev)
    return DistInfo(rank, world, local_rank, dev, initialized_here)


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across(info: DistInfo, values: list[float]) -> list[float]:
    """The mean of each number over all processes (the numbers themselves in a single process)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return [float(v) / info.world_size for v in t.tolist()]


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
