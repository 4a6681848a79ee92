"""Share a trained bundle: the model-zoo archive ``NAME.zip`` holding ``NAME/...``."""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import yaml

from .data.manifests import sha256_of
from .io import atomic_write_bytes, default_file_mode, read_json_object

__all__ = ["LARGE_FILE_BYTES", "bundle_name", "pack_bundle"]

LARGE_FILE_BYTES = 25 * 1024 * 1024  # model-zoo limit for files stored in the archive itself
_INCLUDED = ("configs", "docs", "models", "LICENSE", "large_files.yml")
_EXCLUDED_PREFIXES = ("models/checkpoint",)  # training state: local, not for sharing
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # one path component: no separators, no "..", no "/"


def bundle_name(bundle_dir: Path) -> str:
    """The bundle's ``name`` from ``configs/metadata.json`` (else the folder name), checked to be one safe path
    component: it names the archive and the folder inside it.

    Raises:
        ValueError: for a malformed ``metadata.json`` or a name that could write outside the output folder.
    """
    meta_path = bundle_dir / "configs" / "metadata.json"
    meta = read_json_object(meta_path)
    name = meta.get("name", bundle_dir.resolve().name)
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{meta_path}: field 'name' must be one file name of letters, digits, '_', '-' and '.' (it names the "
            f"archive and its folder), got {name!r}."
        )
    return name


def pack_bundle(bundle_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/NAME.zip`` (``NAME`` from ``configs/metadata.json``) with the bundle's configs, docs, licence
    and weights under ``NAME/``. Files over 25 MB are left out and listed, with their sha256, in
    ``large_files.yml`` (fill in each ``url`` with where you host them; ``monai.bundle download_large_files``
    fetches them).

    Raises:
        FileNotFoundError: when the bundle has no ``configs/metadata.json`` or no ``models/model.pt``.
        ValueError: for a malformed ``metadata.json`` or an unsafe ``name`` (see :func:`bundle_name`).
    """
    bundle_dir = Path(bundle_dir)
    for required in ("configs/metadata.json", "models/model.pt"):
        if not (bundle_dir / required).is_file():
            raise FileNotFoundError(f"{bundle_dir / required}: missing; train the bundle before packing it.")
    name = bundle_name(bundle_dir)
    files = sorted(
        path
        for entry in _INCLUDED
        for path in ([bundle_dir / entry] if (bundle_dir / entry).is_file() else (bundle_dir / entry).rglob("*"))
        if path.is_file() and not path.relative_to(bundle_dir).as_posix().startswith(_EXCLUDED_PREFIXES)
    )
    large = [path for path in files if path.stat().st_size > LARGE_FILE_BYTES]
    mode = default_file_mode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            if path not in large and path.name != "large_files.yml":
                _add(archive, f"{name}/{path.relative_to(bundle_dir).as_posix()}", path.read_bytes(), mode)
        if large:
            listing = {"large_files": [_large_entry(bundle_dir, path) for path in large]}
            _add(archive, f"{name}/large_files.yml", yaml.safe_dump(listing, sort_keys=False).encode(), mode)
    return atomic_write_bytes(Path(out_dir) / f"{name}.zip", buffer.getvalue())


def _add(archive: zipfile.ZipFile, member: str, payload: bytes, mode: int) -> None:
    """Store ``payload`` as ``member`` with ordinary file permissions (the umask's, not the 0600 that ``writestr``
    and private source files would give), so a colleague who unpacks the archive can read it."""
    info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100000 | mode) << 16  # a regular file with these permission bits
    archive.writestr(info, payload)


def _large_entry(bundle_dir: Path, path: Path) -> dict:
    return {
        "path": path.relative_to(bundle_dir).as_posix(),
        "url": "",
        "hash_val": sha256_of(path),
        "hash_type": "sha256",
    }
