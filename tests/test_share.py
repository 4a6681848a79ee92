"""Sharing a trained bundle: `slicenav export`, `slicenav pack` and MONAI's own loader on the unpacked archive."""

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import monai.bundle
import pytest
import torch
import yaml

from monai_slicenav import pack as pack_module
from monai_slicenav.cli import main
from monai_slicenav.export import SliceEncoder
from monai_slicenav.networks import SliceTokenizer

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "slicenav_tokenizer"


@pytest.fixture
def trained_bundle(tmp_path):
    bundle = tmp_path / "slicenav_tokenizer"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "eval", "data"))
    (bundle / "models").mkdir()
    torch.manual_seed(0)
    tokenizer = SliceTokenizer(channels=(32, 64, 128), fsq_levels=(8, 5, 5, 5)).eval()
    torch.save(tokenizer.state_dict(), bundle / "models" / "model.pt")
    torch.save({"model": tokenizer.state_dict()}, bundle / "models" / "checkpoint_epoch=3.pt")
    return bundle, tokenizer


def test_export_from_bundle(trained_bundle, tmp_path):
    bundle, tokenizer = trained_bundle
    main(["export", "--bundle_dir", str(bundle), "--out", str(tmp_path / "exported")])
    encoder = SliceEncoder.from_pretrained(tmp_path / "exported").eval()
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(encoder(x), tokenizer.encoder(x))


def test_export_errors_name_the_file(trained_bundle, tmp_path, capsys):
    bundle, tokenizer = trained_bundle
    state = tokenizer.state_dict()
    state["stray.weight"] = state.pop("decoder.to_image.conv.bias")
    torch.save(state, bundle / "models" / "model.pt")
    with pytest.raises(SystemExit):
        main(["export", "--bundle_dir", str(bundle), "--out", str(tmp_path / "exported")])
    assert "decoder.to_image.conv.bias" in capsys.readouterr().err
    (bundle / "models" / "model.pt").unlink()
    with pytest.raises(SystemExit):
        main(["export", "--bundle_dir", str(bundle), "--out", str(tmp_path / "exported")])
    assert "model.pt: missing (the bundle's weights)" in capsys.readouterr().err
    assert not (tmp_path / "exported").exists()


def test_pack_and_load_with_monai(trained_bundle, tmp_path):
    bundle, tokenizer = trained_bundle
    main(["pack", str(bundle), "--out", str(tmp_path / "zoo")])
    archive = tmp_path / "zoo" / "slicenav_tokenizer.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert "slicenav_tokenizer/configs/metadata.json" in names and "slicenav_tokenizer/models/model.pt" in names
    assert not any("checkpoint_epoch" in name for name in names)  # training state stays local
    zipfile.ZipFile(archive).extractall(tmp_path / "unpacked")
    model = monai.bundle.load(
        "slicenav_tokenizer", model=SliceTokenizer(channels=(32, 64, 128)), bundle_dir=str(tmp_path / "unpacked")
    )
    x = torch.rand(1, 1, 64, 64)
    assert torch.equal(model.eval()(x), tokenizer(x))


def test_large_weights_are_listed_not_packed(trained_bundle, tmp_path, monkeypatch):
    bundle, _ = trained_bundle
    monkeypatch.setattr(pack_module, "LARGE_FILE_BYTES", 1_000_000)  # model.pt (~2.8 MB) counts as large
    archive = pack_module.pack_bundle(bundle, tmp_path / "zoo")
    with zipfile.ZipFile(archive) as opened:
        assert "slicenav_tokenizer/models/model.pt" not in opened.namelist()
        listing = yaml.safe_load(opened.read("slicenav_tokenizer/large_files.yml"))
    (entry,) = listing["large_files"]
    assert entry["path"] == "models/model.pt" and len(entry["hash_val"]) == 64 and entry["hash_type"] == "sha256"


def test_packed_and_exported_files_are_readable_by_colleagues(trained_bundle, tmp_path):
    bundle, _ = trained_bundle
    previous = os.umask(0o022)
    try:
        (bundle / "models" / "model.pt").chmod(0o600)  # a private source file still packs readable
        archive = pack_module.pack_bundle(bundle, tmp_path / "zoo")
        main(["export", "--bundle_dir", str(bundle), "--out", str(tmp_path / "exported")])
    finally:
        os.umask(previous)
    modes = [archive.stat().st_mode] + [p.stat().st_mode for p in (tmp_path / "exported").iterdir()]
    assert all(stat.S_IMODE(m) == 0o644 for m in modes)
    with zipfile.ZipFile(archive) as opened:
        assert all(stat.S_IMODE(info.external_attr >> 16) == 0o644 for info in opened.infolist())
        assert all(not info.filename.startswith(("/", "..")) for info in opened.infolist())


def test_a_packed_bundle_holds_the_base_config_itself(tmp_path):
    """Every pretraining bundle stacks the base pretraining.yaml, held in its own configs/ as a regular file: its
    model-zoo zip holds it, so the zip runs on its own."""
    bundles = Path(__file__).resolve().parents[1] / "bundles"
    shutil.copytree(bundles / "static_volume_baseline" / "configs", tmp_path / "static_volume_baseline" / "configs")
    (tmp_path / "static_volume_baseline" / "models").mkdir()
    torch.save({"w": torch.zeros(1)}, tmp_path / "static_volume_baseline" / "models" / "model.pt")
    archive = zipfile.ZipFile(pack_module.pack_bundle(tmp_path / "static_volume_baseline", tmp_path / "zoo"))
    member = archive.getinfo("static_volume_baseline/configs/pretraining.yaml")
    assert stat.S_ISREG(member.external_attr >> 16)
    shared = (bundles / "slicenav_tokenizer" / "configs" / "pretraining.yaml").read_bytes()
    assert archive.read(member) == shared


def test_a_packed_trained_bundle_says_what_it_was_trained_on_and_with(tokenizer_bundle, tmp_path, capsys):
    """--version and --description go into the archive's metadata (the bundle's own is left as it was), its
    data_source names the data the encoder recorded, and configs/trained.yaml stacked on the archive's own configs
    gives back every hyper-parameter the run used, overrides included."""
    from monai.bundle import ConfigParser

    bundle = tmp_path / "trained"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "eval", "data"))
    shutil.copytree(tokenizer_bundle / "models", bundle / "models")
    before = (bundle / "configs" / "metadata.json").read_bytes()
    main(["pack", str(bundle), "--out", str(tmp_path / "zoo"), "--version", "1.2.0", "--description", "Mine."])
    assert (bundle / "configs" / "metadata.json").read_bytes() == before
    zipfile.ZipFile(tmp_path / "zoo" / "slicenav_tokenizer.zip").extractall(tmp_path / "unpacked")
    root = tmp_path / "unpacked" / "slicenav_tokenizer"
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["version"] == "1.2.0" and next(iter(meta["changelog"].items())) == ("1.2.0", "Mine.")
    assert meta["description"] == "Mine." and "0.3.0" in meta["changelog"]
    assert meta["data_source"].startswith("Embedded default: 1 synthetic label-ensemble volumes")
    recorded = json.loads((bundle / "models" / "training.json").read_text())["hyperparameters"]
    assert recorded["slice_size"] == 32 and recorded["channels"] == [8, 16, 16]  # the fixture's overrides
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / n) for n in ("pretraining.yaml", "train.yaml", "trained.yaml")])
    parser["bundle_root"] = str(root)
    assert {key: parser.get_parsed_content(key) for key in recorded} == recorded
    assert tuple(parser.get_parsed_content("network_def").config.channels) == (8, 16, 16)

    for bad in (["--version", "1.2"], ["--description", " "]):
        with pytest.raises(SystemExit):
            main(["pack", str(bundle), "--out", str(tmp_path / "other"), *bad])
        assert bad[0] in capsys.readouterr().err and not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    "bundle",
    ["slicenav_tokenizer", "slicenav_dynamics", "static_volume_baseline", "slicenav_segmentation", "voxel_contrastive"],
)
def test_every_hyper_parameter_is_recorded_from_the_parsed_config(bundle):
    """No bundle keeps a list of its hyper-parameters: the record is read from the parsed config, so a key added to
    a config or set on the command line is in configs/trained.yaml without anyone remembering to list it, the
    regime's defaults are pinned as the values they had, and derived keys and wires are left out."""
    from monai.bundle import ConfigParser

    from monai_slicenav.experiments.pretrain import train_configs
    from monai_slicenav.transforms import NAVIGATION_REGIME
    from monai_slicenav.workflows import bundle_hyperparameters

    parser = ConfigParser(ConfigParser.load_config_files(train_configs(bundle)))
    handlers = [h for h in parser.get("train#handlers") if "TrainingRecordHandler" in str(h.get("_target_"))]
    assert handlers[0]["hyperparameters"] == "$monai_slicenav.workflows.bundle_hyperparameters()"
    assert "hyperparameters" not in parser.get()  # no hand-kept list left
    parser.update({"a_new_knob": 3, "learning_rate": 0.5, "bundle_root": "/somewhere"})
    recorded = bundle_hyperparameters(parser)
    assert recorded["a_new_knob"] == 3 and recorded["learning_rate"] == 0.5 and recorded["seed"] == parser["seed"]
    assert "bundle_root" not in recorded and "is_main_rank" not in recorded and "device" not in recorded
    if bundle != "slicenav_segmentation":  # the pretraining bundles draw in the navigation regime
        assert recorded["max_translation"] == NAVIGATION_REGIME.max_translation
        assert recorded["zoom_range"] == list(NAVIGATION_REGIME.zoom_range)


def test_the_hyper_parameters_are_read_from_the_parser_evaluating_the_expression():
    """Called from a config's expression, the record finds the parser on the call stack and reads the config as
    overridden; keys computed from others and the recording key itself are left out; anywhere else: one error."""
    from monai.bundle import ConfigParser

    from monai_slicenav.workflows import bundle_hyperparameters

    config = {"lr": 0.1, "twice": "$@lr * 2",
              "pi": "$round(3.14159, 2)", "record": {"all": "$monai_slicenav.workflows.bundle_hyperparameters()"},
              "again": "$monai_slicenav.workflows.bundle_hyperparameters()"}  # fmt: skip
    parser = ConfigParser(config, globals={"monai_slicenav": "monai_slicenav"})
    parser["lr"] = 0.3  # an override, as `monai.bundle run --lr 0.3` applies it
    assert parser.get_parsed_content("record#all") == {"lr": 0.3, "pi": 3.14}
    with pytest.raises(RuntimeError, match="bundle config"):
        bundle_hyperparameters()
