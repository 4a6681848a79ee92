"""Your own scans, loaded once: the deterministic front of the input chain (load, reorient, normalise, foreground)
computed for every volume before the first step, cached on disk, and a file that fails it skipped by name."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from monai.data import MetaTensor, PersistentDataset
from monai.transforms import RandomizableTrait, Transform

__all__ = ["CACHE_FORMAT", "file_item_hash", "preprocessing_hash", "ScreenedVolumeDataset"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # raised whenever what the loaders store changes meaning: older cache entries are then ignored
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


class ScreenedVolumeDataset(PersistentDataset):
    """A :class:`monai.data.PersistentDataset` whose deterministic part is run for every item when it is built:
    each volume is loaded, reoriented, normalised and checked once, before training, and kept in ``cache_dir``
    (then every epoch reads the cache and draws fresh random trajectories); an item whose deterministic part fails
    (a truncated or non-image file, NaN values, a constant or degenerate volume) is skipped with a warning naming
    it and the reason, and listed in :attr:`skipped`, or, with ``strict``, stops the run there.

    Items whose first transform is random (the synthetic volumes of the embedded default) have no deterministic
    part: nothing is loaded in advance or cached for them.

    Cached items are written with torch's serialiser and read back with ``weights_only=True``; the loaders keep only
    tensors, the affine and the file name in each volume's metadata so that they load that way.

    Args:
        data: datalist items.
        transform: the input chain (a MONAI ``Compose``); its deterministic front is what is cached.
        cache_dir: folder for the cached volumes; None: no cache (each volume is then loaded once here to check it
            and again at every use).
        strict: True: the first failing item raises instead of being skipped.

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
    ) -> None:
        super().__init__(
            data=list(data),
            transform=transform,
            cache_dir=cache_dir or None,
            hash_func=file_item_hash,
            hash_transform=preprocessing_hash,
            track_meta=True,
            weights_only=True,
        )
        self.skipped: list[dict] = []  # {"file": ..., "reason": ...} of each item left out
        self.data = self._screen(list(self.data), strict)

    def _pre_transform(self, item_transformed: dict) -> dict:
        """The deterministic front, without the transforms' record of what they did (``applied_operations``
        holds numpy arrays that ``weights_only`` loading refuses; pretraining never inverts a transform)."""
        item = super()._pre_transform(item_transformed)
        for value in item.values() if isinstance(item, dict) else ():
            if isinstance(value, MetaTensor):
                value.applied_operations = []
        return item

    def _screen(self, items: list[dict], strict: bool) -> list[dict]:
        first_random = self.transform.get_index_of_first(_not_cacheable)
        if first_random == 0:  # nothing deterministic to check or cache (synthetic items)
            return items
        usable, started, reported = [], time.monotonic(), time.monotonic()
        for index, item in enumerate(items, start=1):
            try:
                self._cachecheck(item)
            except Exception as err:  # any failure of a deterministic load is this file's problem (named below)
                name = str(item.get("image", item.get("name", f"item {index}")))
                reason = _one_line(_root_cause(err), name)
                if strict:
                    raise ValueError(f"{name}: {reason}") from err
                logger.warning("%s: %s; skipped.", name, reason)
                self.skipped.append({"file": name, "reason": reason})
                continue
            usable.append(item)
            if time.monotonic() - reported > _PROGRESS_SECONDS:
                reported = time.monotonic()
                logger.info("checked %d/%d volumes (%.0f s)", index, len(items), reported - started)
        if items and not usable:
            raise FileNotFoundError(
                f"none of the {len(items)} volumes could be used; the first: {self.skipped[0]['file']}: "
                f"{self.skipped[0]['reason']}"
            )
        return usable
