"""File input and output: loading volumes with clear errors, atomic writes that never leave half a file."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from monai.data import MetaTensor
from monai.transforms import LoadImage

from .volume import check_scan

__all__ = [
    "checked_scan",
    "load_volume",
    "atomic_write_bytes",
    "atomic_write_json",
    "json_bytes",
    "read_json_object",
    "png_bytes",
    "atomic_write_files",
    "default_file_mode",
    "check_output_dir",
]


def load_volume(path: str | os.PathLike, channels: int | None = None) -> MetaTensor:
    """Load a NIfTI (or any MONAI-readable) 3D volume as a channel-first (C, X, Y, Z) MetaTensor with its affine.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file cannot be read, is not a usable 3D volume (see :func:`~.volume.check_scan`:
            NaN, constant, degenerate voxels, a side under 2 voxels), or has other than ``channels`` channels (when
            given); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        img = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    except Exception as err:  # readers raise many types (nibabel, gzip, EOF, ...): report them all as bad input
        raise ValueError(f"{path}: cannot read the image ({type(err).__name__}: {err}).") from err
    check_scan(img, str(path))  # refuses, naming the file, what would render or navigate garbage
    if channels is not None and img.shape[0] != channels:  # a 4D series loads as channels: never frame 0 silently
        raise ValueError(
            f"{path}: {img.shape[0]} frames or channels (a 4D image); expected {channels} (extract one first)."
        )
    return img


def checked_scan(path: str | os.PathLike, channels: int | None = 1) -> str:
    """``path``, after loading and checking it with :func:`load_volume` (``channels`` as there); for configs that then
    load the file themselves with MONAI's ``LoadImaged`` (whose reader errors, inside a ``Compose``, do not name the
    file).

    Raises:
        FileNotFoundError, ValueError: as :func:`load_volume`, naming the file.
    """
    load_volume(path, channels)
    return str(path)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` through a temporary file in the same folder and a rename.

    A reader never sees a partial file, and an existing file is only replaced once the new one is complete.
    """
    return atomic_write_files({path: payload})[0]


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0o644 under umask 022)."""
    try:  # Linux reports the umask without changing it; os.umask would, for an instant, in every thread
        status = Path("/proc/self/status").read_text()
        mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write_files(payloads: dict[str | os.PathLike, bytes]) -> list[Path]:
    """Write several files as one unit: every payload goes to a temporary file first (flushed to disk), and only
    when all are complete are they renamed over their targets; a failure before that leaves every target as it
    was. Use it for files that belong together (weights and their config). Files get the mode ``open()`` would
    give them under the umask (``mkstemp`` alone makes them 0600, unreadable to colleagues sharing a model)."""
    staged: list[tuple[Path, str]] = []
    mode = default_file_mode()
    try:
        for target, payload in payloads.items():
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((path, temporary))
            os.chmod(temporary, mode)
            with os.fdopen(handle, "wb") as stream:
                stream.write(payload)
                stream.flush()
                os.fsync(stream.fileno())
        for path, temporary in staged:
            os.replace(temporary, path)
    except BaseException:
        for _, temporary in staged:
            Path(temporary).unlink(missing_ok=True)
        raise
    return [path for path, _ in staged]


def json_bytes(payload: object) -> bytes:
    """``payload`` as indented JSON text with a final newline, the form every record here is written in."""
    return (json.dumps(payload, indent=2) + "\n").encode()


def png_bytes(image: object) -> bytes:
    """A PNG file's bytes of a PIL image, or of a (H, W) array or tensor of intensities in [0, 1] (8 bit grey)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        pixels = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float64)
        image = Image.fromarray((pixels.clip(0.0, 1.0) * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``.

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: naming the file, when it is not valid UTF-8 JSON or holds something other than an object.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}.")
    return record


def atomic_write_json(path: str | os.PathLike, payload: object) -> Path:
    """Write ``payload`` as indented JSON, atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, json_bytes(payload))


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check, before any work, that ``path`` can become an output folder: not an existing file, no file in the
    way above it, and the nearest existing folder writable. Creates nothing.

    Raises:
        ValueError: naming the path and the problem.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: is a file, not a folder.")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, so the folder cannot be made.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {existing} is not writable.")
    return path
