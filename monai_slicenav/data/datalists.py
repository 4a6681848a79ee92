"""Datalists: the embedded default training data, generated on the fly or found installed; never downloaded."""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from .manifests import load_manifest, manifest_datalist
from .packaged import packaged_pairs

__all__ = [
    "synthetic_seed",
    "embedded_datalist",
    "file_datalist",
    "volume_files",
    "user_datalist",
    "screen_volume",
    "split_items",
    "pretraining_datalist",
    "describe_data",
]

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii", ".nii.gz")
_LIST_SUFFIXES = (".txt", ".csv", ".tsv")
LISTED_FILES = 256  # provenance names every file up to this many (always: the count and a sha256 of the list)


def synthetic_seed(seed: int, index: int) -> int:
    """The label-map seed of synthetic volume ``index`` in the dataset drawn with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def embedded_datalist(num_synthetic: int = 16, seed: int = 0, include_packaged: bool = True) -> list[dict]:
    """The default training datalist: synthetic volumes, deterministic per index and seed, then (optionally) the
    real image/label pairs of :func:`~monai_slicenav.data.packaged.packaged_pairs` installed on this machine.

    Synthetic items are ``{"source": "synthetic", "synth_seed": int, "name": str}``; packaged ones carry
    ``"source": "packaged"`` and file paths. :class:`~monai_slicenav.transforms.EmbeddedVolumed` turns both into
    ``image`` and ``label``; for synthetic items alone, :class:`~monai_slicenav.transforms.SynthLabelEnsembled`
    and :class:`~monai_slicenav.transforms.RandSynthAppearanced` do the same. Synthetic label maps can be kept in a
    disk cache: ``cache_dir`` of :class:`~monai_slicenav.transforms.SynthLabelEnsemble` (also through
    ``EmbeddedVolumed(synth_options={"cache_dir": ...})``).

    Raises:
        ValueError: when ``num_synthetic`` < 0, or the list would be empty.
    """
    if num_synthetic < 0:
        raise ValueError(f"num_synthetic must be >= 0, got {num_synthetic}.")
    items = [
        {"source": "synthetic", "synth_seed": synthetic_seed(seed, index), "name": f"synth_s{seed}_{index:04d}"}
        for index in range(num_synthetic)
    ]
    if include_packaged:
        items += packaged_pairs()
    if not items:
        raise ValueError("The embedded datalist is empty: ask for num_synthetic >= 1 or install packaged volumes.")
    return items


def file_datalist(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Items of your own image files for :class:`~monai_slicenav.transforms.EmbeddedVolumed`:
    ``{"source": "file", "image": path, "name": file name without extensions}``.

    Raises:
        FileNotFoundError: naming the first missing file.
    """
    items = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file.")
        items.append({"source": "file", "image": str(path), "name": path.name.split(".")[0]})
    return items


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def _listed(list_file: Path) -> list[Path]:
    """Paths in a text or CSV list (one per line, or the first column; a header row is skipped), relative ones
    taken from the list's folder."""
    delimiter = "\t" if list_file.suffix == ".tsv" else ","
    with list_file.open(newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.reader(stream, delimiter=delimiter) if row and row[0].strip()]
    paths = [Path(row[0].strip()) for row in rows if not row[0].lstrip().startswith("#")]
    paths = [path if path.is_absolute() else list_file.parent / path for path in paths]
    if paths and not _is_volume(paths[0]):  # a header such as "image" or "path"
        paths = paths[1:]
    return paths


def volume_files(source: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Path]:
    """The image files a user points at: a folder (searched recursively for NIfTI ``*.nii`` / ``*.nii.gz``), a
    glob (``scans/*/t1.nii.gz``), a ``.txt`` / ``.csv`` / ``.tsv`` list (one path per line or the first column,
    relative to the list), a ``data_manifests/*.json`` manifest (its ``image`` entry, else its first entry, of the
    cases under ``root``), or one NIfTI file. Sorted, without duplicates.

    Raises:
        FileNotFoundError: when nothing matches (the message says what was searched) or a listed file is missing.
        ValueError: for a manifest without ``root``.
    """
    text = str(source)
    path = Path(source)
    if any(char in text for char in "*?[") and not path.exists():
        found = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
    elif path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and _is_volume(p)]
    elif path.suffix == ".json" and path.is_file():
        if root is None:
            raise ValueError(f"{path}: a manifest needs the folder its dataset was downloaded to (root).")
        record = load_manifest(path)
        entry = "image" if "image" in record["entries"] else next(iter(record["entries"]))
        found = [Path(item[entry]) for item in manifest_datalist(record, root) if entry in item]
    elif path.suffix in _LIST_SUFFIXES and path.is_file():
        found = _listed(path)
        missing = [str(p) for p in found if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: {len(missing)} listed files do not exist, e.g. {missing[:3]}.")
    elif path.is_file():
        found = [path]
    else:
        raise FileNotFoundError(f"{source}: no such file, folder or glob match.")
    if not found:
        raise FileNotFoundError(
            f"{source}: no NIfTI volumes found (a folder is searched recursively for *.nii / *.nii.gz; also "
            "accepted: a glob, a .txt/.csv list, or a data_manifests/*.json manifest with its root)."
        )
    return sorted(dict.fromkeys(found))


def screen_volume(path: Path) -> str | None:
    """Why ``path`` cannot be a training volume, from its header alone (cheap for large collections), or None:
    not a readable NIfTI, or not 3D (a 2D image, a 4D series with more than one frame)."""
    try:
        header = nib.load(str(path)).header
        shape = tuple(int(n) for n in header.get_data_shape())
    except Exception as err:  # nibabel raises many types for a damaged or foreign file: all are bad input here
        return f"not a readable NIfTI image ({type(err).__name__}: {err})"
    spatial = shape[:3] if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1) else None
    if spatial is None or min(spatial) < 2:
        return f"not a 3D volume (shape {shape})"
    return None


def user_datalist(source: str | os.PathLike, root: str | os.PathLike | None = None, strict: bool = False) -> list[dict]:
    """:func:`file_datalist` of :func:`volume_files`: your own scans as items for
    :class:`~monai_slicenav.transforms.EmbeddedVolumed`, named by their path relative to the common folder (so
    ``a/t1.nii.gz`` and ``b/t1.nii.gz`` stay apart). Files that :func:`screen_volume` rejects are skipped with a
    warning naming each (``strict``: the first one raises instead).

    Raises:
        FileNotFoundError: when nothing is found, or every file is rejected.
        ValueError: with ``strict``, for the first rejected file (named).
    """
    paths = volume_files(source, root)
    usable = []
    for path in paths:
        problem = screen_volume(path)
        if problem is None:
            usable.append(path)
        elif strict:
            raise ValueError(f"{path}: {problem}.")
        else:
            logger.warning("%s: %s; skipped.", path, problem)
    if not usable:
        raise FileNotFoundError(f"{source}: none of the {len(paths)} files found is a usable 3D volume.")
    items = file_datalist(usable)
    common = Path(os.path.commonpath([str(p.parent) for p in usable]))
    for item, path in zip(items, usable, strict=True):
        relative = path.relative_to(common).as_posix()
        item["name"] = relative.removesuffix(".gz").removesuffix(".nii").replace("/", "_")
    return items


def split_items(items: Sequence[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded, stable held-out split of your own items: an item is held out when the sha256 of
    ``seed:name`` falls below ``val_fraction`` (so it keeps its side whichever other files are present); at least
    one item on each side when there are two or more.

    Raises:
        ValueError: for ``val_fraction`` outside [0, 1).
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")

    def score(item: dict) -> float:
        digest = hashlib.sha256(f"{seed}:{item['name']}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    ranked = sorted(items, key=score)
    held = [item for item in ranked if score(item) < val_fraction]
    if val_fraction > 0 and not held and len(ranked) > 1:
        held = ranked[:1]
    if len(held) == len(ranked) and len(ranked) > 1:
        held = held[:-1]
    names = {item["name"] for item in held}
    return [item for item in items if item["name"] not in names], [item for item in items if item["name"] in names]


def pretraining_datalist(
    part: str,
    data: str | os.PathLike = "",
    data_root: str | os.PathLike = "",
    val_data: str | os.PathLike = "",
    val_fraction: float = 0.1,
    num_synthetic: int = 16,
    num_val_synthetic: int = 2,
    seed: int = 0,
    include_packaged: bool = False,
    strict: bool = False,
    val_seed: int | None = None,
) -> list[dict]:
    """The training (``part="train"``) or validation (``"validate"``) datalist of a pretraining bundle.

    Without ``data``: the embedded default (:func:`embedded_datalist`; validation on synthetic volumes drawn with
    ``val_seed``). With ``data`` (anything :func:`volume_files` accepts, ``data_root`` for a manifest): your own
    scans, validated on ``val_data`` when given, else on a held-out split of them seeded by ``val_seed``
    (:func:`split_items`); never silently on synthetic volumes. Unusable files are skipped with a warning
    (``strict``: an error). A fixed ``val_seed`` keeps the validation data the same whatever the training ``seed``,
    so runs with several seeds compare on the same volumes; ``None`` draws it from the training seed (synthetic
    volumes with ``seed + 1``, the split with ``seed``).

    Raises:
        ValueError: for an unknown part, or a ``val_seed`` equal to ``seed`` with the embedded data (the validation
            volumes would be the training volumes).
        FileNotFoundError: when ``data`` or ``val_data`` holds no volume (named).
    """
    if part not in ("train", "validate"):
        raise ValueError(f"part must be 'train' or 'validate', got {part!r}.")
    if not str(data):
        if val_seed is not None and int(val_seed) == int(seed):
            raise ValueError(
                f"val_seed {val_seed} equals the training seed: the synthetic validation volumes would be the "
                "training volumes; choose another seed or val_seed."
            )
        if part == "train":
            return embedded_datalist(num_synthetic, seed, include_packaged=include_packaged)
        return embedded_datalist(num_val_synthetic, seed + 1 if val_seed is None else val_seed, include_packaged=False)
    root = str(data_root) or None
    if str(val_data):
        return user_datalist(data if part == "train" else val_data, root, strict)
    split_seed = seed if val_seed is None else val_seed
    train, held_out = split_items(user_datalist(data, root, strict), val_fraction, split_seed)
    return train if part == "train" else held_out


def describe_data(
    data: str | os.PathLike = "",
    data_root: str | os.PathLike = "",
    num_synthetic: int = 16,
    seed: int = 0,
    include_packaged: bool = False,
    train: object = None,
    validate: object = None,
) -> dict:
    """What a pretraining run trained on, for ``encoder.json`` provenance: the embedded default (synthetic count,
    seed, packaged or not), or your own scans (where from, how many, and a sha256 of the sorted file list).

    ``train`` and ``validate`` are the built datasets (anything with ``data`` items, e.g.
    :class:`~monai_slicenav.data.ScreenedVolumeDataset`): then the counts and the hash are of the volumes actually
    used, and ``skipped`` names every file found but not used, with the reason where the dataset gave one.
    Without them, the files that pass :func:`screen_volume` are counted. Up to :data:`LISTED_FILES` files are also
    named (relative to ``data`` when it is a folder)."""
    if not str(data):
        return {
            "source": "embedded",
            "num_synthetic": int(num_synthetic),
            "seed": int(seed),
            "packaged": include_packaged,
        }
    found = [str(p) for p in volume_files(data, str(data_root) or None)]
    if train is None:
        used, held_out, reasons = [p for p in found if screen_volume(Path(p)) is None], [], {}
    else:
        used = [str(item["image"]) for item in train.data]
        held_out = [str(item["image"]) for item in getattr(validate, "data", [])]
        reasons = {s["file"]: s["reason"] for d in (train, validate) for s in getattr(d, "skipped", [])}
    skipped = [p for p in found if p not in set(used) | set(held_out)]
    return {
        "source": "own scans",
        "data": str(data),
        **({"data_root": str(data_root)} if str(data_root) else {}),
        "count": len(used),
        **({"validation_count": len(held_out)} if train is not None else {}),
        "skipped": len(skipped),
        **({"skipped_files": [_skip_entry(p, reasons) for p in skipped]} if train is not None else {}),
        "files_sha256": _list_digest(used),
        **({"validation_files_sha256": _list_digest(held_out)} if held_out else {}),
        **(
            {"files": _named(used, data), "validation_files": _named(held_out, data)}
            if len(found) <= LISTED_FILES
            else {}
        ),
    }


def _named(files: Sequence[str], data: str | os.PathLike) -> list[str]:
    """The files, relative to ``data`` when it is a folder holding them."""
    folder = Path(data)
    if not folder.is_dir():
        return sorted(files)
    return sorted(Path(f).relative_to(folder).as_posix() if Path(f).is_relative_to(folder) else f for f in files)


def _list_digest(files: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()


def _skip_entry(path: str, reasons: dict) -> dict:
    """A skipped file and why: the dataset's reason, else the header check's (files skipped before loading)."""
    reason = reasons.get(path) or screen_volume(Path(path)) or "not in the datalist"
    return {"file": path, "reason": reason}
