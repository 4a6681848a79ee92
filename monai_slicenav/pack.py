"""Share a trained bundle: the model-zoo archive ``NAME.zip`` holding ``NAME/...``, with its metadata saying what
it was trained on and the hyper-parameters it was trained with (``configs/trained.yaml``)."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path

import yaml

from .data.manifests import load_manifest, sha256_of
from .data.packaged import load_packaged_manifest
from .io import atomic_write_bytes, default_file_mode, read_json_object

__all__ = [
    "LARGE_FILE_BYTES",
    "bundle_name",
    "packed_metadata",
    "trained_config",
    "data_licence_note",
    "training_data_licences",
    "pack_bundle",
]

LARGE_FILE_BYTES = 25 * 1024 * 1024  # model-zoo limit for files stored in the archive itself
_INCLUDED = ("configs", "docs", "models", "LICENSE", "large_files.yml")
_EXCLUDED_PREFIXES = ("models/checkpoint",)  # training state: local, not for sharing
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # one path component: no separators, no "..", no "/"
_VERSION = re.compile(r"\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?")  # semantic versioning, as the model zoo expects
TRAINED_CONFIG = "configs/trained.yaml"
DATA_LICENSE = "docs/data_license.txt"  # the model zoo asks for it where the training data has a licence


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


def _data_source(bundle_dir: Path) -> str | None:
    """In words, what the bundle's exported encoder says it was trained on (``provenance.data``), or None."""
    record_path = bundle_dir / "models" / "encoder" / "encoder.json"
    if not record_path.is_file():
        return None
    data = read_json_object(record_path).get("provenance", {}).get("data")
    if not isinstance(data, dict):
        return None
    if data.get("source") == "own scans":
        return (
            f"Own scans: {data.get('count')} training and {data.get('validation_count', 0)} validation volumes from "
            f"{data.get('data')} ({data.get('skipped', 0)} files skipped; sha256 of the sorted training file list "
            f"{data.get('files_sha256')})"
        )
    packaged = ", plus the real templates installed by packages" if data.get("packaged") else ""
    return (
        f"Embedded default: {data.get('num_synthetic')} synthetic label-ensemble volumes with random appearance "
        f"(seed {data.get('seed')}), generated on the fly{packaged}"
    )


def packed_metadata(bundle_dir: str | os.PathLike, version: str | None = None, description: str | None = None) -> dict:
    """``configs/metadata.json`` as it goes into the archive (the bundle's own file is left unchanged): ``version``
    set and recorded first in the ``changelog`` (with ``description`` as its entry), ``description`` replaced, and
    ``data_source`` taken from what the trained encoder recorded (``models/encoder/encoder.json``), when it has.

    Raises:
        ValueError: for a version that is not ``MAJOR.MINOR.PATCH`` or an empty description.
    """
    meta = read_json_object(Path(bundle_dir) / "configs" / "metadata.json")
    if version is not None:
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise ValueError(f"--version must be MAJOR.MINOR.PATCH (e.g. 1.0.0), got {version!r}.")
        changelog = meta.get("changelog") if isinstance(meta.get("changelog"), dict) else {}
        entry = description or f"trained and packed from {meta.get('name', 'the bundle')} {meta.get('version', '')}"
        meta["changelog"] = {version: entry.strip(), **{k: v for k, v in changelog.items() if k != version}}
        meta["version"] = version
    if description is not None:
        if not isinstance(description, str) or not description.strip():
            raise ValueError("--description must be a non-empty text.")
        meta["description"] = description.strip()
    source = _data_source(Path(bundle_dir))
    if source is not None:
        meta["data_source"] = source
    return meta


def trained_config(bundle_dir: str | os.PathLike) -> bytes | None:
    """``configs/trained.yaml``: the hyper-parameters the bundle was trained with (``models/training.json``,
    written by :class:`~monai_slicenav.workflows.TrainingRecordHandler`), to stack last on the bundle's training
    configs; None when the bundle recorded none. An ``encoder_path`` the bundle copied into ``models/encoder`` is
    pointed at that copy, so the archive reproduces its training on its own."""
    record_path = Path(bundle_dir) / "models" / "training.json"
    record = read_json_object(record_path) if record_path.is_file() else {}
    settings = record.get("hyperparameters")
    if not isinstance(settings, dict) or not settings:
        return None
    settings = dict(settings)
    if record.get("encoder") and "encoder_path" in settings:
        settings["encoder_path"] = f"$@bundle_root + '/models/{record['encoder']}'"
    header = (
        "# The hyper-parameters this bundle was trained with (overrides included), written by `slicenav pack` from\n"
        "# models/training.json. Stack it last on the training configs to reproduce the training, e.g.\n"
        "#   python -m monai.bundle run --config_file \"['configs/pretraining.yaml','configs/train.yaml',"
        "'configs/trained.yaml']\" --bundle_root .\n"
        "# (configs/train.yaml alone where the bundle has no pretraining.yaml).\n"
        "# Paths are those of the training machine.\n"
    )
    return (header + yaml.safe_dump(settings, sort_keys=False)).encode()


def pack_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    version: str | None = None,
    description: str | None = None,
) -> Path:
    """Write ``out_dir/NAME.zip`` (``NAME`` from ``configs/metadata.json``) with the bundle's configs, docs, licence
    and weights under ``NAME/``, its metadata from :func:`packed_metadata` and, when the training recorded its
    hyper-parameters, ``configs/trained.yaml`` (:func:`trained_config`), and where the training data carries a licence
    ``docs/data_license.txt`` (:func:`data_licence_note`). Files over 25 MB are left out and listed,
    with their sha256, in ``large_files.yml`` (fill in each ``url`` with where you host them;
    ``monai.bundle download_large_files`` fetches them). The bundle folder itself is not changed.

    Raises:
        FileNotFoundError: when the bundle has no ``configs/metadata.json`` or no ``models/model.pt``.
        ValueError: for a malformed ``metadata.json``, an unsafe ``name`` (see :func:`bundle_name`), a bad
            ``version`` or an empty ``description``.
    """
    bundle_dir = Path(bundle_dir)
    for required in ("configs/metadata.json", "models/model.pt"):
        if not (bundle_dir / required).is_file():
            raise FileNotFoundError(f"{bundle_dir / required}: missing; train the bundle before packing it.")
    name = bundle_name(bundle_dir)
    generated = {"configs/metadata.json": (json.dumps(packed_metadata(bundle_dir, version, description), indent=2)
                                           + "\n").encode()}  # fmt: skip
    trained = trained_config(bundle_dir)
    if trained is not None:
        generated[TRAINED_CONFIG] = trained
    licence = data_licence_note(bundle_dir)
    if licence is not None:
        generated[DATA_LICENSE] = licence
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
            member = path.relative_to(bundle_dir).as_posix()
            if path not in large and path.name != "large_files.yml" and member not in generated:
                _add(archive, f"{name}/{member}", path.read_bytes(), mode)
        for member, payload in generated.items():
            _add(archive, f"{name}/{member}", payload, mode)
        if large:
            listing = {"large_files": [_large_entry(bundle_dir, path) for path in large]}
            _add(archive, f"{name}/large_files.yml", yaml.safe_dump(listing, sort_keys=False).encode(), mode)
    return atomic_write_bytes(Path(out_dir) / f"{name}.zip", buffer.getvalue())


def training_data_licences(bundle_dir: str | os.PathLike) -> list[str]:
    """The licences of the data the bundle's exported encoder says it was trained on: a ``data_manifests``
    manifest's ``licence`` when trained on a downloaded dataset, the packaged templates' licences when they were
    included; none for the synthetic engine alone or for a folder of your own scans."""
    record = Path(bundle_dir) / "models" / "encoder" / "encoder.json"
    data = read_json_object(record).get("provenance", {}).get("data") if record.is_file() else None
    if not isinstance(data, dict):
        return []
    licences = []
    given = str(data.get("data", ""))
    if data.get("source") == "own scans" and given and not Path(given).is_dir():  # a manifest (path or name)?
        try:
            licences.append(str(load_manifest(given)["licence"]))
        except (FileNotFoundError, ValueError, KeyError):
            pass  # a manifest that is not on this machine: nothing known to record
    if data.get("packaged"):
        licences += [str(v["licence"]) for v in load_packaged_manifest()["volumes"] if v.get("licence")]
    return list(dict.fromkeys(licences))


def data_licence_note(bundle_dir: str | os.PathLike) -> bytes | None:
    """``docs/data_license.txt`` for a bundle whose recorded training data carries licences (a downloaded dataset's
    manifest, the packaged templates), unless the bundle has its own; None when there is nothing to record."""
    licences = training_data_licences(bundle_dir)
    if not licences or (Path(bundle_dir) / DATA_LICENSE).is_file():
        return None
    lines = ["The weights in this bundle were trained on data under these terms (as its encoder.json records):", ""]
    return ("\n".join(lines + [f"- {licence}" for licence in licences]) + "\n").encode()


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
