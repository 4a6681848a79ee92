"""Small helpers for torchrun/DDP runs: which process is the main one, and keeping the others quiet."""

from __future__ import annotations

import logging

import torch.distributed as dist
from monai.utils.dist import RankFilter

__all__ = ["is_main_process", "silence_other_ranks"]


def is_main_process() -> bool:
    """True outside a process group and on rank 0 inside one."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def silence_other_ranks() -> None:
    """Let only rank 0 log: MONAI's ``RankFilter`` on the root logger and its handlers, which every propagating
    logger's records pass through. Call it after ``init_process_group``."""
    rank_filter = RankFilter()
    root = logging.getLogger()
    for target in (root, *root.handlers):
        target.addFilter(rank_filter)
