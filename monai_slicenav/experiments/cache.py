"""Hash-and-reuse: a finished piece of work is kept with the digest of everything that determines it (settings,
config text, package version) and reused while that digest is unchanged, so a rerun continues where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .. import __version__
from ..io import atomic_write_json

__all__ = ["digest", "reusable", "cached"]


def digest(payload: object) -> str:
    """sha256 of ``payload`` (JSON, keys sorted) together with the package version."""
    text = json.dumps({"payload": payload, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def reusable(
    record_path: str | os.PathLike, key: str, valid: Callable[[dict], bool] = lambda record: True
) -> dict | None:
    """The record at ``record_path`` when it exists, reads as JSON, carries ``hash == key`` and passes ``valid``;
    else None (a truncated or damaged record is then computed again, never trusted)."""
    path = Path(record_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):  # a truncated or damaged record: computed again
        return None
    return record if isinstance(record, dict) and record.get("hash") == key and valid(record) else None


def cached(record_path: str | os.PathLike, settings: Mapping, compute: Callable[[], dict]) -> dict:
    """``compute()``'s record, reused from ``record_path`` when finished with the same ``settings``; a new record is
    written atomically with its ``hash`` and ``seconds``."""
    key = digest(dict(settings))
    record = reusable(record_path, key)
    if record is None:
        start = time.perf_counter()
        record = {**compute(), "hash": key, "seconds": round(time.perf_counter() - start, 2)}
        atomic_write_json(record_path, record)
    return record
