import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_slicenav.cli import main
from monai_slicenav.data.manifests import case_split, check_manifest, load_manifest, manifest_datalist, sha256_of
from monai_slicenav.data.packaged import manifest_dir

SPLIT = {"seed": 0, "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "method": "sha256-bucket"}


def make_dataset(root, cases=4):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for index in range(cases):
        data = np.random.default_rng(index).random((6, 7, 5)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / "imagesTr" / f"case_{index:03d}.nii.gz"))
        nib.save(
            nib.Nifti1Image((data > 0.5).astype(np.uint8), np.eye(4)),
            str(root / "labelsTr" / f"case_{index:03d}.nii.gz"),
        )
    (root / "dataset.json").write_text('{"name": "tiny"}')
    manifest = {
        "name": "tiny",
        "homepage": "https://example.org",
        "licence": "CC0",
        "files": [{"path": "dataset.json", "sha256": sha256_of(root / "dataset.json")}],
        "cases": {"glob": "imagesTr/case_*.nii.gz", "id_regex": r"^imagesTr/(case_\d+)\.nii\.gz$", "expected": cases},
        "entries": {"image": "imagesTr/{id}.nii.gz", "label": "labelsTr/{id}.nii.gz"},
        "split": SPLIT,
    }
    path = root.parent / "tiny.json"
    path.write_text(json.dumps(manifest))
    return path


def snapshot(root):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_datalist_and_split(tmp_path):
    manifest = make_dataset(tmp_path / "tiny")
    items = manifest_datalist(manifest, tmp_path / "tiny")
    assert [item["case_id"] for item in items] == [f"case_{i:03d}" for i in range(4)]
    assert all(item["image"].endswith(f"{item['case_id']}.nii.gz") and "labelsTr" in item["label"] for item in items)
    assert {item["split"] for item in items} <= {"train", "val", "test"}
    train = manifest_datalist(manifest, tmp_path / "tiny", split="train")
    assert train == [item for item in items if item["split"] == "train"]


def test_split_is_seeded_stable_and_proportional():
    ids = [f"subject_{i:04d}" for i in range(3000)]
    splits = [case_split(i, SPLIT) for i in ids]
    assert splits == [case_split(i, SPLIT) for i in ids]
    assert abs(splits.count("train") / 3000 - 0.6) < 0.03 and abs(splits.count("test") / 3000 - 0.2) < 0.03
    assert splits != [case_split(i, {**SPLIT, "seed": 1}) for i in ids]


def test_datalist_names_missing_files(tmp_path):
    manifest = make_dataset(tmp_path / "tiny")
    (tmp_path / "tiny" / "labelsTr" / "case_002.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="case_002"):
        manifest_datalist(manifest, tmp_path / "tiny")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        manifest_datalist(manifest, tmp_path / "absent")


def test_check_flags_problems_and_modifies_nothing(tmp_path):
    root = tmp_path / "tiny"
    manifest = make_dataset(root)
    assert check_manifest(manifest, root) == ([], 9)
    truncated = root / "imagesTr" / "case_001.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:-60])
    (root / "labelsTr" / "case_003.nii.gz").unlink()
    (root / "dataset.json").write_text('{"name": "changed"}')
    before = snapshot(root)
    problems, _ = check_manifest(manifest, root)
    assert snapshot(root) == before
    found = {(p.kind, p.path.split("/tiny/")[-1]) for p in problems}
    assert found == {
        ("unreadable", "imagesTr/case_001.nii.gz"),
        ("missing", "labelsTr/case_003.nii.gz"),
        ("checksum", "dataset.json"),
    }


def test_cli_check_exit_codes(tmp_path, capsys):
    root = tmp_path / "tiny"
    manifest = make_dataset(root)
    main(["data", "check", str(manifest), "--root", str(root)])
    assert "9 files checked, 0 problems" in capsys.readouterr().out
    (root / "imagesTr" / "case_000.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", str(manifest), "--root", str(root)])
    assert exit_info.value.code == 1
    assert "UNREADABLE" in capsys.readouterr().out


def test_cli_data_list(capsys):
    main(["data", "list"])
    out = capsys.readouterr().out
    assert "synthetic" in out and "msd_task04_hippocampus" in out and "colin27_aal" in out


@pytest.mark.parametrize("name", ["ixi", "oasis", "msd_task04_hippocampus", "brats2021"])
def test_shipped_manifests(name):
    record = load_manifest(name)
    assert record["name"] == name and record["split"]["seed"] == 0
    assert abs(sum(record["split"]["fractions"].values()) - 1.0) < 1e-9
    assert "{id}" in next(iter(record["entries"].values()))
    assert (manifest_dir() / f"{name}.json").is_file()


def test_load_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such manifest"):
        load_manifest("no_such_dataset")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="lacks the fields"):
        load_manifest(bad)


def test_checksums_in_upper_case_match(tmp_path):
    manifest_path = make_dataset(tmp_path / "tiny")
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][0]["sha256"] = manifest["files"][0]["sha256"].upper()
    manifest_path.write_text(json.dumps(manifest))
    problems, _ = check_manifest(manifest_path, tmp_path / "tiny")
    assert not problems
    (tmp_path / "tiny" / "dataset.json").write_text('{"name": "changed"}')
    problems, _ = check_manifest(manifest_path, tmp_path / "tiny")
    assert any(p.path.endswith("dataset.json") for p in problems)  # a real mismatch is still reported


@pytest.mark.parametrize(
    "spoil, field",
    [
        (lambda m: m["cases"].update(id_regex="([unclosed"), "cases.id_regex"),
        (lambda m: m["cases"].update(glob="/etc/*"), "cases.glob"),
        (lambda m: m["cases"].update(glob="../elsewhere/*.nii.gz"), "cases.glob"),
        (lambda m: m.update(cases="T1/*"), "cases"),
        (lambda m: m.update(files="T1/a.nii.gz"), "files"),
        (lambda m: m.update(entries=["t1"]), "entries"),
        (lambda m: m["entries"].update(t1="T1/fixed.nii.gz"), "entries.t1"),
        (lambda m: m.update(optional_entries=["flair"]), "optional_entries"),
        (lambda m: m["split"].update(fractions={"train": 0.5}), "split.fractions"),
    ],
    ids=[
        "regex",
        "absolute_glob",
        "parent_glob",
        "cases_string",
        "files_string",
        "entries_list",
        "no_id",
        "unknown_optional",
        "fractions_sum",
    ],  # fmt: skip
)
def test_malformed_manifest_fields_are_named_before_any_search(tmp_path, spoil, field):
    manifest = json.loads((Path(__file__).resolve().parents[1] / "data_manifests" / "ixi.json").read_text())
    spoil(manifest)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(manifest))
    for call in (lambda: load_manifest(path), lambda: manifest_datalist(manifest, tmp_path),
                 lambda: check_manifest(manifest, tmp_path)):  # fmt: skip
        with pytest.raises(ValueError, match=f"field '{re.escape(field)}'"):
            call()
