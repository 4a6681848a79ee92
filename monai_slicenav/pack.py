"""Share a trained bundle: the model-zoo archive ``NAME.zip`` holding ``NAME/...``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import yaml

from .io import atomic_write_bytes

__all__ = ["LARGE_FILE_BYTES", "pack_bundle"]

LARGE_FILE_BYTES = 25 * 1024 * 1024  # model-zoo limit for files stored in the archive itself
_INCLUDED = ("configs", "docs", "models", "LICENSE", "large_files.yml")
_EXCLUDED_PREFIXES = ("models/checkpoint",)  # training state: local, not for sharing


def pack_bundle(bundle_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/NAME.zip`` (``NAME`` from ``configs/metadata.json``) with the bundle's configs, docs, licence
    and weights under ``NAME/``. Files over 25 MB are left out and listed, with their sha256, in
    ``large_files.yml`` (fill in each ``url`` with where you host them; ``monai.bundle download_large_files``
    fetches them).

    Raises:
        FileNotFoundError: when the bundle has no ``configs/metadata.json`` or no ``models/model.pt``.
    """
    bundle_dir = Path(bundle_dir)
    for required in ("configs/metadata.json", "models/model.pt"):
        if not (bundle_dir / required).is_file():
            raise FileNotFoundError(f"{bundle_dir / required}: missing; train the bundle before packing it.")
    name = json.loads((bundle_dir / "configs" / "metadata.json").read_text()).get("name", bundle_dir.name)
    files = sorted(
        path
        for entry in _INCLUDED
        for path in ([bundle_dir / entry] if (bundle_dir / entry).is_file() else (bundle_dir / entry).rglob("*"))
        if path.is_file() and not path.relative_to(bundle_dir).as_posix().startswith(_EXCLUDED_PREFIXES)
    )
    large = [path for path in files if path.stat().st_size > LARGE_FILE_BYTES]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            if path not in large and path.name != "large_files.yml":
                archive.write(path, f"{name}/{path.relative_to(bundle_dir).as_posix()}")
        if large:
            listing = {"large_files": [_large_entry(bundle_dir, path) for path in large]}
            archive.writestr(f"{name}/large_files.yml", yaml.safe_dump(listing, sort_keys=False))
    return atomic_write_bytes(Path(out_dir) / f"{name}.zip", buffer.getvalue())


def _large_entry(bundle_dir: Path, path: Path) -> dict:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return {
        "path": path.relative_to(bundle_dir).as_posix(),
        "url": "",
        "hash_val": digest.hexdigest(),
        "hash_type": "sha256",
    }
