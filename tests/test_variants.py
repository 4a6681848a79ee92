"""The one table of variants: consistent with the bundles and the export mapping, the single place a new variant is
added (a throwaway one runs through `slicenav pretrain` and `slicenav evaluate`), and the source of evaluate's
up-front checks."""

import json

import pytest

from monai_slicenav.cli import main
from monai_slicenav.encoders.record import ENCODER_ARCHITECTURES
from monai_slicenav.experiments.evaluate import chosen_variants, evaluate
from monai_slicenav.experiments.pretrain import bundles_dir
from monai_slicenav.experiments.variants import (
    CONTROLS,
    VARIANT_TABLE,
    Variant,
    evaluated_variants,
    register_variant,
    variant_help,
)
from monai_slicenav.networks import SliceTokenizer

from .packaged_data import needs_packaged_data

THROWAWAY = Variant(
    "tokenizer_ssim_heavy", "slicenav_tokenizer", SliceTokenizer, "the tokenizer weighted to SSIM",
    overrides={"ssim_weight": 0.8},
)  # fmt: skip


@pytest.fixture
def throwaway_variant():
    """THROWAWAY registered for one test, the table restored afterwards."""
    saved = dict(VARIANT_TABLE)
    register_variant(THROWAWAY)
    yield THROWAWAY.name
    VARIANT_TABLE.clear()
    VARIANT_TABLE.update(saved)


@pytest.mark.parametrize("name", sorted(VARIANT_TABLE))
def test_each_entry_names_a_bundle_and_the_encoders_its_network_exports(name):
    variant = VARIANT_TABLE[name]
    for bundle in variant.stages:
        assert (bundles_dir() / bundle / "configs" / "train.yaml").is_file(), bundle
    cut = {cls.export_name for cls in ENCODER_ARCHITECTURES.values() if variant.network in cls.cut_from}
    assert cut == set(variant.exports) and "encoder" in variant.exports.values()


def test_rows_help_and_registration():
    assert evaluated_variants() == (
        "random", "static_volume", "voxel_contrastive", "tokenizer_only", "dynamics_untrained", "dynamics_none",
        "dynamics_shuffled", "dynamics_aligned",
    )  # fmt: skip
    assert set(evaluated_variants()) == set(VARIANT_TABLE) | set(CONTROLS)
    assert all(f"{name}: " in variant_help(controls=True) for name in evaluated_variants())
    with pytest.raises(ValueError, match="already exists"):
        register_variant(VARIANT_TABLE["tokenizer_only"])
    with pytest.raises(ValueError, match="already exists"):
        register_variant(Variant("random", "slicenav_tokenizer", SliceTokenizer, "a control's name"))


def test_without_labels_all_leaves_out_what_needs_them_and_naming_one_fails_first(tmp_path, caplog):
    chosen = chosen_variants("all", labelled=False)
    assert "voxel_contrastive" not in chosen and "dynamics_aligned" in chosen
    assert "need label maps" in caplog.text
    assert "voxel_contrastive" in chosen_variants("all")
    with pytest.raises(ValueError, match="learn from label maps"):
        evaluate(["tokenizer_only", "voxel_contrastive"], seeds=1, budget="micro", out=tmp_path / "o", data=tmp_path)
    assert not (tmp_path / "o").exists()


@needs_packaged_data
def test_a_new_variant_is_one_table_entry(throwaway_variant, tmp_path, capsys):
    name = throwaway_variant
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert f"{name} (the tokenizer weighted to SSIM)" in capsys.readouterr().err
    main(["pretrain", name, "2", str(tmp_path / "pretrained"), "--preset", "micro"])
    record = json.loads((tmp_path / "pretrained" / "pretrain.json").read_text())
    stage = record["stages"][0]
    assert record["variant"] == name and stage["bundle"] == "slicenav_tokenizer"
    assert stage["overrides"]["ssim_weight"] == 0.8 and stage["overrides"]["epoch_length"] == 2
    trained = json.loads((tmp_path / "pretrained" / "stages").glob("*/models/training.json").__next__().read_text())
    assert trained["hyperparameters"]["ssim_weight"] == 0.8
    main(["evaluate", "--variants", f"random,{name}", "--seeds", "1", "--budget", "micro", "--out", str(tmp_path)])
    table = (tmp_path / "results.md").read_text()
    assert f"| {name} |" in table and "| random |" in table
