"""Your own scans, loaded once: the deterministic front of the input chain (load, reorient, normalise, foreground)
computed for every volume before the first step (in worker processes, each rank of a distributed run its own
share), kept in the compact volume store (:mod:`monai_slicenav.data.store`), and a file that fails it skipped by
name."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from pathlib import Path

import torch
from monai.data import MetaTensor, PersistentDataset
from monai.transforms import RandomizableTrait, Transform

from .store import StoreEntryError, read_entry, read_header, write_entry

__all__ = ["CACHE_FORMAT", "file_item_hash", "preprocessing_hash", "ScreenedVolumeDataset"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2  # raised whenever what the loaders store changes meaning: older cache entries are then ignored
# (2: the compact store; the foreground threshold on a boundary between stored levels)
_PROGRESS_SECONDS = 10.0  # a progress line at most this often while screening


def file_item_hash(item: dict) -> bytes:
    """Cache key of a datalist item: its entries plus, for every entry naming an existing file, the file's resolved
    path, size and modification time, so that a scan replaced in place is loaded again rather than served stale."""
    stamped = {}
    for key, value in sorted(item.items(), key=lambda kv: str(kv[0])):
        stamped[str(key)] = value
        if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
            stat = os.stat(value)
            stamped[str(key)] = [str(Path(value).resolve()), stat.st_size, stat.st_mtime_ns]
    text = json.dumps(stamped, sort_keys=True, default=str)
    return hashlib.sha256(f"{CACHE_FORMAT}:{text}".encode()).hexdigest().encode()


def preprocessing_hash(transforms: Sequence[Callable] | str) -> bytes:
    """Key of the cached (deterministic) transforms: their class names and plain settings (numbers, strings, flags
    of each transform's own attributes), so that a cache filled with other preprocessing settings is not reused."""
    described = transforms if isinstance(transforms, str) else [_settings(t) for t in transforms]
    return hashlib.sha256(json.dumps([CACHE_FORMAT, described]).encode()).hexdigest()[:16].encode()


def _settings(transform: object, depth: int = 3) -> list:
    """A transform's class name and plain settings, including those of the transforms it holds (a padder's size)."""
    plain = {}
    for key, value in sorted(vars(transform).items()):
        if isinstance(value, (bool, int, float, str)) or (
            isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in value)
        ):
            plain[key] = value
        elif isinstance(value, Transform) and depth > 0:
            plain[key] = _settings(value, depth - 1)
    return [type(transform).__qualname__, plain]


def _not_cacheable(transform: object) -> bool:
    """Where PersistentDataset stops caching: at the first random transform or non-MONAI callable."""
    return isinstance(transform, RandomizableTrait) or not isinstance(transform, Transform)


def _one_line(err: BaseException, name: str) -> str:
    """``err`` as one line without the file name it may start with (the warning names the file once)."""
    text = " ".join(str(err).split()).removeprefix(f"{name}: ").rstrip(".")
    return text or type(err).__name__


def _root_cause(err: BaseException) -> BaseException:
    """The innermost error: MONAI's Compose wraps a transform's error in ``RuntimeError("applying transform ...")``."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


_SCREENED: ScreenedVolumeDataset | None = None  # the dataset a forked screening worker checks items of


def _screen_in_worker(index: int) -> tuple[int, str | None]:
    """Check (and store) item ``index`` of the dataset the worker was forked with: ``(index, None)`` when usable,
    else ``(index, reason)``."""
    return index, _SCREENED._check(index)


def _quiet_worker() -> None:
    torch.set_num_threads(1)  # the workers are the parallelism; torch's own threads would oversubscribe the cores


class ScreenedVolumeDataset(PersistentDataset):
    """A :class:`monai.data.PersistentDataset` whose deterministic part is run for every item when it is built:
    each volume is loaded, reoriented, normalised and checked once, before training, and kept in ``cache_dir`` as
    a compact store entry (:mod:`monai_slicenav.data.store`: cropped, uint8, compressed, checksummed; then every
    epoch reads the entry and draws fresh random trajectories); an item whose deterministic part fails (a truncated
    or non-image file, NaN values, a constant or degenerate volume) is skipped with a warning naming it and the
    reason, and listed in :attr:`skipped`, or, with ``strict``, stops the run there.

    The checks run in ``num_workers`` processes, with a progress line every 10 s. In a distributed run (a
    ``torch.distributed`` group initialised before the dataset is built) each rank checks and stores its share of
    the items (every ``world_size``-th), then, after a barrier, reads the others' results from the store: each scan
    is loaded and written once. A failed item leaves a small ``.failed`` record with its reason, so that the next
    run skips it without loading it again (the key changes when the file does).

    Items whose first transform is random (the synthetic volumes of the embedded default) have no deterministic
    part: nothing is loaded in advance or stored for them.

    Args:
        data: datalist items.
        transform: the input chain (a MONAI ``Compose``); its deterministic front is what is stored.
        cache_dir: folder of the store; None: no store (each volume is then loaded once here to check it and again
            at every use).
        strict: True: the first failing item raises instead of being skipped.
        num_workers: processes that check and store the items; None: the machine's cores; 0: in this process.

    Raises:
        ValueError: with ``strict``, naming the first item that fails and why.
        FileNotFoundError: when every item fails (the first reason is given).
    """

    def __init__(
        self,
        data: Sequence[dict],
        transform: Callable,
        cache_dir: str | os.PathLike | None = None,
        strict: bool = False,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(
            data=list(data),
            transform=transform,
            cache_dir=cache_dir or None,
            hash_func=file_item_hash,
            hash_transform=preprocessing_hash,
            track_meta=True,
        )
        self.num_workers = (os.cpu_count() or 1) if num_workers is None else max(int(num_workers), 0)
        self.skipped: list[dict] = []  # {"file": ..., "reason": ...} of each item left out
        self.data = self._screen(list(self.data), strict)

    def entry_path(self, item: dict) -> Path | None:
        """Where ``item``'s store entry is (None without a store): named by the file's identity and the
        preprocessing, so that a replaced scan or other settings make a new entry."""
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{self.hash_func(item).decode()}{self.transform_hash}.snv"

    def _cachecheck(self, item_transformed: dict) -> dict:
        """The deterministic front of ``item_transformed``: read from its store entry, or computed, stored and read
        back (so that a volume is the same whether its entry was built now or by an earlier run). A damaged entry
        is rebuilt with a warning."""
        path = self.entry_path(item_transformed)
        if path is None:
            return self._pre_transform(deepcopy(item_transformed))
        if path.is_file():
            try:
                return read_entry(path)
            except StoreEntryError as err:
                logger.warning("%s", err)
        write_entry(path, self._pre_transform(deepcopy(item_transformed)))
        return read_entry(path)

    def _store(self, item: dict) -> None:
        """Make sure ``item`` has a store entry (without one, just run the front to check it). An entry whose header
        reads is trusted here, so a start-up over a large store reads headers only; a damaged array is caught and
        rebuilt by :meth:`_cachecheck` when training reads it."""
        path = self.entry_path(item)
        if path is not None and path.is_file():
            try:
                read_header(path)
                return
            except StoreEntryError as err:
                logger.warning("%s", err)
        front = self._pre_transform(deepcopy(item))
        if path is not None:
            write_entry(path, front)

    def _pre_transform(self, item_transformed: dict) -> dict:
        """The deterministic front, without the transforms' record of what they did (pretraining never inverts a
        transform, and the store keeps volumes, their affines and file names)."""
        item = super()._pre_transform(item_transformed)
        for value in item.values() if isinstance(item, dict) else ():
            if isinstance(value, MetaTensor):
                value.applied_operations = []
        return item

    def _check(self, index: int) -> str | None:
        """Check (and store) item ``index``: None when usable, else why not (also recorded next to the store)."""
        item = self.data[index]
        failed = self.entry_path(item).with_suffix(".failed") if self.cache_dir is not None else None
        if failed is not None and failed.is_file():
            return json.loads(failed.read_text())["reason"]
        try:
            self._store(item)
        except Exception as err:  # any failure of a deterministic load is this file's problem (named by the caller)
            reason = _one_line(_root_cause(err), _name(item, index))
            if failed is not None:
                _write_text_atomically(failed, json.dumps({"file": _name(item, index), "reason": reason}))
            return reason
        return None

    def _known(self, index: int) -> str | None | bool:
        """What the store already says about item ``index``: None (usable), a reason (failed), False (unknown)."""
        entry = self.entry_path(self.data[index])
        if entry.is_file():
            return None
        failed = entry.with_suffix(".failed")
        return json.loads(failed.read_text())["reason"] if failed.is_file() else False

    def _screen(self, items: list[dict], strict: bool) -> list[dict]:
        first_random = self.transform.get_index_of_first(_not_cacheable)
        if first_random == 0:  # nothing deterministic to check or cache (synthetic items)
            return items
        rank, world = _rank_and_world() if self.cache_dir is not None else (0, 1)  # ranks share through the store
        results = dict(self._run_checks(list(range(rank, len(items), world)), strict))
        failures = sorted(index for index, reason in results.items() if reason is not None)
        if strict and failures:
            raise ValueError(f"{_name(items[failures[0]], failures[0])}: {results[failures[0]]}")
        if world > 1:
            torch.distributed.barrier()  # every rank's share is stored (or recorded as failed) past this point
            for index in (i for i in range(len(items)) if i not in results):
                known = self._known(index)
                results[index] = self._check(index) if known is False else known
        usable = []
        for index, item in enumerate(items):
            reason = results[index]
            if reason is None:
                usable.append(item)
                continue
            name = _name(item, index)
            if strict:
                raise ValueError(f"{name}: {reason}")  # another rank's share
            logger.warning("%s: %s; skipped.", name, reason)
            self.skipped.append({"file": name, "reason": reason})
        if items and not usable:
            raise FileNotFoundError(
                f"none of the {len(items)} volumes could be used; the first: {self.skipped[0]['file']}: "
                f"{self.skipped[0]['reason']}"
            )
        return usable

    def _run_checks(self, indices: list[int], strict: bool):
        """Yield ``(index, reason or None)`` for ``indices``, checked in worker processes when there are several
        workers and items, with a progress line every 10 s; with ``strict`` the first failure ends the checks."""
        global _SCREENED
        started = reported = time.monotonic()
        workers = min(self.num_workers, len(indices))
        if workers > 1:
            _SCREENED = self  # inherited by the forked workers: only indices and reasons cross processes
            pool = multiprocessing.get_context("fork").Pool(workers, initializer=_quiet_worker)
            results = pool.imap_unordered(_screen_in_worker, indices)
        else:
            pool, results = None, ((index, self._check(index)) for index in indices)
        try:
            for done, (index, reason) in enumerate(results, start=1):
                yield index, reason
                if strict and reason is not None:
                    return
                if time.monotonic() - reported > _PROGRESS_SECONDS:
                    reported = time.monotonic()
                    logger.info(
                        "checked %d/%d volumes (%.0f s, %d workers)", done, len(indices), reported - started, workers
                    )
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
                _SCREENED = None


def _name(item: dict, index: int) -> str:
    return str(item.get("image", item.get("name", f"item {index + 1}")))


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size of an initialised ``torch.distributed`` group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _write_text_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)
