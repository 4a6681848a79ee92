"""The compact volume store: one file per cached volume of your own scans, a few times smaller than the float32 tensors
it replaces (often smaller than the ``.nii.gz`` it came from), read back whole in milliseconds.

An entry holds the deterministic front of the input chain (the loaded, reoriented, [0, 1]-scaled image and its label
map or foreground mask) as follows:

* cropped to the box of its non-zero voxels (plus one voxel) on disk, and put back on its full grid with zeros
  around it when read: lossless, the same shape and affine as stored;
* the [0, 1] image as uint8 (255 levels, error at most 1/510: far below the tokenizer's reconstruction error; see
  ``bench/store.py``), other float volumes as float32;
* a 0/1 mask that equals ``image > t`` for a threshold between two stored levels (the foreground of
  :class:`~monai_slicenav.transforms.LoadVolumed`, whose threshold is snapped with
  :func:`~monai_slicenav.volume.level_boundary` for this)
  as that threshold alone, other label maps in the smallest integer type that holds them;
* each array compressed with Blosc2 (zstd, as nnU-Net v2 and nnssl store volumes; one block per array), with
  a CRC32 per array so that a truncated or damaged entry is detected and rebuilt, never rendered.

Entries are written to a temporary file in the same folder and renamed into place: a build killed half-way or
stopped by a full disk leaves no file under an entry's name. Layout: ``MAGIC``, a little-endian uint32 header
length, the JSON header, then the arrays' Blosc2 frames.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from ..volume import STORED_LEVELS as LEVELS

__all__ = ["STORE_FORMAT", "StoreEntryError", "write_entry", "read_entry", "read_header"]

STORE_FORMAT = 2  # raised whenever an entry's layout or meaning changes: older entries are then rebuilt
MAGIC = b"SLICENAV-STORE\n"


class StoreEntryError(ValueError):
    """A store entry that cannot be used: truncated, damaged, or of another format."""


def _compress(array: np.ndarray) -> bytes:
    import blosc2  # imported here: only the store needs it

    # One block, the whole array: entries are read whole (one trajectory's slices touch every 32-plane block:
    # bench/store.py), and one block compresses best (MNI152: 0.58x the .nii.gz against 0.95x in 32-plane blocks).
    blocks = array.shape
    cparams = {"codec": blosc2.Codec.ZSTD, "clevel": 5, "filters": [blosc2.Filter.SHUFFLE]}
    return blosc2.asarray(np.ascontiguousarray(array), chunks=array.shape, blocks=blocks, cparams=cparams).to_cframe()


def _decompress(frame: bytes) -> np.ndarray:
    import blosc2

    return blosc2.ndarray_from_cframe(frame)[...]


def _nonzero_box(arrays: list[np.ndarray]) -> tuple[list[int], list[int]]:
    """Inclusive-exclusive voxel box of the voxels non-zero in any of ``arrays`` (C, X, Y, Z), one voxel wider."""
    occupied = np.zeros(arrays[0].shape[1:], dtype=bool)
    for array in arrays:
        occupied |= (array != 0).any(axis=0)
    if not occupied.any():
        return [0, 0, 0], list(occupied.shape)
    lo, hi = [], []
    for axis, size in enumerate(occupied.shape):
        used = np.flatnonzero(occupied.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(max(int(used[0]) - 1, 0))
        hi.append(min(int(used[-1]) + 2, size))
    return lo, hi


def _in_unit_range(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and array.size > 0 and 0.0 <= array.min() and array.max() <= 1.0


def _encode(array: np.ndarray, levels: np.ndarray | None, reference: str | None) -> tuple[dict, bytes | None]:
    """How one cropped non-reference array is stored: its header record and its frame (None when a threshold on
    the reference image's ``levels`` says it all)."""
    if array.dtype.kind == "f":
        return {"kind": "float32"}, _compress(array.astype(np.float32))
    if levels is not None and array.size and array.min() >= 0 and array.max() <= 1 and levels.shape == array.shape:
        inside, outside = levels[array.astype(bool)], levels[~array.astype(bool)]
        if inside.size and outside.size and inside.min() > outside.max():
            return {"kind": "threshold", "of": reference, "of_levels": int(outside.max())}, None
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    stored = next(
        t for t in (np.uint8, np.int16, np.int32, np.int64) if np.iinfo(t).min <= low <= high <= np.iinfo(t).max
    )
    record = {"kind": "integer", "dtype": np.dtype(array.dtype).name, "stored": np.dtype(stored).name}
    return record, _compress(array.astype(stored))


def write_entry(path: str | os.PathLike, item: dict) -> int:
    """Store ``item`` (MetaTensor volumes (C, X, Y, Z) sharing one affine, plus JSON-able plain values) at ``path``,
    atomically; returns the bytes written.

    Raises:
        TypeError: for a value that is neither a volume nor JSON-able (nothing is written).
    """
    volumes = {k: v for k, v in item.items() if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in item.items() if k not in volumes}
    json.dumps(plain)  # a TypeError here names the value that cannot be stored
    arrays = {k: v.detach().cpu().numpy() for k, v in volumes.items()}
    grids = {a.shape[1:] for a in arrays.values()}  # volumes on one grid share one box (a mask stays aligned)
    boxes = {grid: _nonzero_box([a for a in arrays.values() if a.shape[1:] == grid]) for grid in grids}
    offsets = {k: boxes[a.shape[1:]][0] for k, a in arrays.items()}
    cropped = {
        k: a[(slice(None), *(slice(x, y) for x, y in zip(*boxes[a.shape[1:]], strict=True)))] for k, a in arrays.items()
    }
    reference = next((k for k, a in cropped.items() if _in_unit_range(a)), None)  # the image, stored as levels
    levels = np.rint(cropped[reference] * LEVELS).astype(np.uint8) if reference is not None else None
    header: dict = {"format": STORE_FORMAT, "plain": plain, "volumes": {}}
    frames: list[bytes] = []
    for key in sorted(cropped, key=lambda k: k != reference):  # the reference first: masks refer to it
        if key == reference:
            record, frame = {"kind": "levels"}, _compress(levels)
        else:
            record, frame = _encode(cropped[key], levels, reference)
        volume = volumes[key]
        affine = np.asarray(volume.affine, dtype=np.float64) if isinstance(volume, MetaTensor) else np.eye(4)
        meta = volume.meta.get("filename_or_obj") if isinstance(volume, MetaTensor) else None
        record.update(
            shape=list(cropped[key].shape), offset=offsets[key], grid=list(arrays[key].shape[1:]),
            affine=affine.tolist(), filename_or_obj=meta,
        )  # fmt: skip
        if frame is not None:
            record.update(nbytes=len(frame), crc32=zlib.crc32(frame))
            frames.append(frame)
        header["volumes"][key] = record
    blob = json.dumps(header).encode()
    return _write_atomically(Path(path), [MAGIC, struct.pack("<I", len(blob)), blob, *frames])


def _write_atomically(path: Path, parts: list[bytes]) -> int:
    """Write ``parts`` to a temporary file next to ``path``, flush it to disk, rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            for part in parts:
                out.write(part)
            out.flush()
            os.fsync(out.fileno())
        mode = 0o666 & ~_umask()
        os.chmod(temp, mode)  # mkstemp makes 0600; an entry gets the permissions of any file this user writes
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return sum(len(part) for part in parts)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of the entry at ``path`` (per volume: how it is stored, its cropped shape on disk, its grid,
    affine and file name), without reading its arrays; the file's size is checked against the arrays it lists.

    Raises:
        FileNotFoundError: no entry at ``path``.
        StoreEntryError: not a store entry of this format, or one whose arrays are cut short (naming the file).
    """
    with open(path, "rb") as handle:
        header = _parse(path, handle.read(len(MAGIC) + 4), handle)[0]
        expected = handle.tell() + sum(int(v.get("nbytes", 0)) for v in header.get("volumes", {}).values())
    if os.path.getsize(path) != expected:
        raise StoreEntryError(f"{path}: {os.path.getsize(path)} bytes, its header lists {expected}; rebuild it.")
    return header


def read_entry(path: str | os.PathLike) -> dict:
    """The item stored at ``path``: volumes as MetaTensors (the image as float32 in [0, 1], labels in their
    original dtype) on their full grids with their affines, plain values as stored.

    Raises:
        FileNotFoundError: no entry at ``path``.
        StoreEntryError: a truncated or damaged entry, or one of another format (naming the file).
    """
    with open(path, "rb") as handle:
        header, payload = _parse(path, handle.read(len(MAGIC) + 4), handle, arrays=True)
    try:
        return _decode(header, memoryview(payload))
    except StoreEntryError as err:
        raise StoreEntryError(f"{path}: {err}; rebuild it.") from None
    except (ValueError, KeyError, RuntimeError) as err:
        raise StoreEntryError(f"{path}: unreadable store entry ({type(err).__name__}: {err}); rebuild it.") from err


def _parse(path, start: bytes, handle, arrays: bool = False) -> tuple[dict, bytes]:
    """The header (and with ``arrays`` the rest of the file) of an entry whose first bytes are ``start``."""
    try:
        if not start.startswith(MAGIC) or len(start) < len(MAGIC) + 4:
            raise StoreEntryError("not a store entry")
        (length,) = struct.unpack_from("<I", start, len(MAGIC))
        header = json.loads(handle.read(length))
        if not isinstance(header, dict) or header.get("format") != STORE_FORMAT:
            raise StoreEntryError(
                f"format {header.get('format') if isinstance(header, dict) else '?'}, expected {STORE_FORMAT}"
            )
    except StoreEntryError as err:
        raise StoreEntryError(f"{path}: {err}; rebuild it.") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise StoreEntryError(f"{path}: unreadable store entry header ({type(err).__name__}); rebuild it.") from err
    return header, handle.read() if arrays else b""


def _uncrop(array: torch.Tensor, offset: list[int], grid: list[int]) -> torch.Tensor:
    """``array`` back in its place on the full ``grid``, zeros around it (the voxels the crop left out)."""
    if list(array.shape[1:]) == list(grid):
        return array
    full = array.new_zeros((array.shape[0], *grid))
    full[(slice(None), *(slice(o, o + n) for o, n in zip(offset, array.shape[1:], strict=True)))] = array
    return full


def _decode(header: dict, payload: memoryview) -> dict:
    item, offset, levels = dict(header["plain"]), 0, {}
    for key, record in header["volumes"].items():
        if record["kind"] == "threshold":
            array = (levels[record["of"]] > record["of_levels"]).astype(np.uint8)
        else:
            frame = bytes(payload[offset : offset + record["nbytes"]])
            offset += record["nbytes"]
            if len(frame) != record["nbytes"] or zlib.crc32(frame) != record["crc32"]:
                raise StoreEntryError(f"{key} is truncated or damaged (checksum mismatch)")
            array = _decompress(frame)
            if record["kind"] == "levels":
                levels[key] = array
                array = torch.from_numpy(array).float().mul_(1.0 / LEVELS)  # torch: 3x faster than numpy here
            elif record["kind"] == "integer":
                array = array.astype(record["dtype"])
        if list(array.shape) != record["shape"]:
            raise StoreEntryError(f"{key} has shape {list(array.shape)}, expected {record['shape']}")
        array = _uncrop(torch.as_tensor(array), record["offset"], record["grid"])
        meta = {"filename_or_obj": record["filename_or_obj"]} if record["filename_or_obj"] else {}
        item[key] = MetaTensor(
            torch.as_tensor(array), affine=torch.tensor(record["affine"], dtype=torch.float64), meta=meta
        )
    if offset != len(payload):
        raise StoreEntryError(f"{len(payload) - offset} bytes beyond the arrays (an interrupted or mixed write)")
    return item
