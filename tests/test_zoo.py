"""The model zoo's checks on every bundle of the repository and on a packed archive (files, version in the
changelog, files over 25 MB listed, a data licence note where the training data has one, the metadata schema)."""

import json
import shutil
import zipfile

import pytest
import torch

from monai_slicenav import pack as pack_module
from monai_slicenav import zoo
from monai_slicenav.cli import main
from monai_slicenav.encoders import SliceEncoder, export_encoder
from monai_slicenav.networks import SliceTokenizer
from monai_slicenav.networks.tokenizer import TokenizerConfig

from .helpers import BUNDLES, SCHEMA

EVERY_BUNDLE = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())


@pytest.mark.parametrize("bundle", EVERY_BUNDLE)
def test_every_bundle_of_the_repository_passes_the_zoo_checks(bundle):
    assert zoo.zoo_problems(BUNDLES / bundle, SCHEMA) == []


def copied(tmp_path, data=None):
    bundle = tmp_path / "slicenav_tokenizer"
    shutil.copytree(BUNDLES / "slicenav_tokenizer", bundle, ignore=shutil.ignore_patterns("models", "eval", "data"))
    (bundle / "models").mkdir()
    torch.save(SliceTokenizer(channels=(8, 16, 16)).state_dict(), bundle / "models" / "model.pt")
    provenance = {"data": data} if data else {}
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16, 16))), bundle / "models" / "encoder", {}, provenance)
    return bundle


def test_each_rule_finds_its_problem(tmp_path, monkeypatch):
    bundle = copied(tmp_path)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["version"] = "9.9.9"
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    (bundle / "LICENSE").unlink()
    monkeypatch.setattr(zoo, "LARGE_FILE_BYTES", (bundle / "models" / "model.pt").stat().st_size - 1)  # it alone
    problems = zoo.zoo_problems(bundle, SCHEMA)
    assert "LICENSE is missing" in problems
    assert "configs/metadata.json: version '9.9.9' is not in its changelog" in problems
    assert any(p.startswith("models/model.pt (") and "not listed in large_files.yml" in p for p in problems)
    (bundle / "large_files.yml").write_text(
        "large_files:\n  - path: models/model.pt\n  - path: models/encoder/encoder.pt\n"
    )
    assert not any("large_files" in p for p in zoo.zoo_problems(bundle))


def test_a_bundle_trained_on_a_licensed_dataset_needs_and_gets_its_licence_note(tmp_path, capsys):
    data = {"source": "own scans", "data": "ixi", "count": 3}
    bundle = copied(tmp_path, data)
    assert pack_module.training_data_licences(bundle) == ["CC BY-SA 3.0"]
    assert zoo.zoo_problems(bundle) == [
        "docs/data_license.txt is missing: the recorded training data carries a licence"
    ]
    archive = pack_module.pack_bundle(bundle, tmp_path / "zoo", version="1.0.0")
    assert zoo.zoo_problems(archive, SCHEMA) == []  # pack wrote the note, the metadata and its changelog
    assert "CC BY-SA 3.0" in zipfile.ZipFile(archive).read("slicenav_tokenizer/docs/data_license.txt").decode()
    main(["check", str(archive)])
    assert "passes the model zoo checks" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:
        main(["check", str(bundle)])
    assert stopped.value.code == 1 and "data_license.txt is missing" in capsys.readouterr().out


def test_a_foreign_archive_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "slicenav_tokenizer.zip", "w") as archive:
        archive.writestr("other/configs/metadata.json", "{}")
    (problem,) = zoo.zoo_problems(tmp_path / "slicenav_tokenizer.zip")
    assert "must hold one folder named slicenav_tokenizer/" in problem


def test_monai_downloads_and_loads_a_packed_archive_from_a_local_path(tmp_path):
    import monai.bundle

    bundle = copied(tmp_path)
    archive = pack_module.pack_bundle(bundle, tmp_path / "zoo", version="1.0.0")
    monai.bundle.download(name="slicenav_tokenizer", bundle_dir=str(tmp_path / "hub"), url=archive.as_uri())
    assert zoo.zoo_problems(tmp_path / "hub" / "slicenav_tokenizer", SCHEMA) == []
    model = monai.bundle.load(
        "slicenav_tokenizer", model=SliceTokenizer(channels=(8, 16, 16)), bundle_dir=str(tmp_path / "hub")
    )
    trained = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
