"""Small helpers for torchrun/DDP runs: which process is the main one, and keeping the others quiet."""

from __future__ import annotations

import logging

import torch.distributed as dist

__all__ = ["is_main_process", "silence_other_ranks"]


def is_main_process() -> bool:
    """True outside a process group and on rank 0 inside one."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def silence_other_ranks(level: int = logging.WARNING) -> None:
    """On ranks other than 0, raise the root logger's level so that only rank 0 logs progress."""
    if not is_main_process():
        logging.getLogger().setLevel(level)
