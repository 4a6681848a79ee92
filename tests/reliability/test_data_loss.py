"""Data loss: a failure never leaves a corrupt or half-written checkpoint, export or archive in place of a good
one, and a damaged cached stage is trained again rather than copied over a good export."""

import json
import os

import pytest

from monai_slicenav.cli import main
from monai_slicenav.encoders import SliceEncoder
from monai_slicenav.export import export_encoder, load_encoder
from monai_slicenav.networks import SliceTokenizer

from .harness import handled, record
from .inputs import spoil_weights, trained_copy

KLASS = "data loss"
TINY = {"channels": (8, 16)}


@pytest.fixture
def exported(tmp_path):
    encoder = SliceEncoder.from_tokenizer(SliceTokenizer(**TINY))
    return tmp_path, encoder, export_encoder(encoder, tmp_path / "enc")


def test_failed_export_keeps_the_previous_one(exported, monkeypatch):
    _, encoder, (weights, meta) = exported
    before = weights.read_bytes(), meta.read_text()
    other = SliceEncoder.from_tokenizer(SliceTokenizer(**TINY))
    with pytest.raises(TypeError, match="not JSON serializable"):
        export_encoder(other, weights.parent, provenance={"data": object()})

    def failing_replace(src, dst):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", failing_replace)
        with pytest.raises(OSError, match="disk full"):
            export_encoder(other, weights.parent)
    assert (weights.read_bytes(), meta.read_text()) == before
    assert sorted(p.name for p in weights.parent.iterdir()) == ["encoder.json", "encoder.pt"]  # no temp files left
    record(KLASS, "export_encoder", "failure mid-write (disk full)")


def test_damaged_cache_entry_is_retrained_not_copied(tmp_path):
    from monai_slicenav.experiments.pretrain import pretrain

    cache = tmp_path / "cache"
    first = pretrain("tokenizer_only", 2, tmp_path / "out", preset="micro", cache_dir=cache)
    good = (tmp_path / "out" / "encoder" / "encoder.pt").read_bytes()
    cached = next(cache.glob("slicenav_tokenizer-*")) / "models" / "encoder" / "encoder.pt"
    cached.write_bytes(cached.read_bytes()[:100])  # truncated, as by a full disk or a killed copy
    again = pretrain("tokenizer_only", 2, tmp_path / "out", preset="micro", cache_dir=cache)
    assert not first["stages"][0]["reused"] and not again["stages"][0]["reused"]  # retrained, not reused
    assert isinstance(load_encoder(tmp_path / "out" / "encoder"), SliceEncoder)
    assert (tmp_path / "out" / "encoder" / "encoder.pt").read_bytes() == good  # seeded: the same weights again
    record(KLASS, "slicenav pretrain", "truncated cached export")


def test_a_failed_export_over_an_existing_one_keeps_it(tokenizer_bundle, tmp_path, capsys):
    bundle = trained_copy(tokenizer_bundle, tmp_path)
    main(["export", str(bundle), "--out", str(tmp_path / "out")])
    spoil_weights(bundle / "models" / "model.pt")
    run = lambda: main(["export", str(bundle), "--out", str(tmp_path / "out")])  # noqa: E731
    handled(KLASS, "slicenav export", "over an existing export", tmp_path, run, r"model\.pt: non-finite", capsys)
    load_encoder(tmp_path / "out")


def test_a_failed_pack_over_an_existing_archive_keeps_it(tokenizer_bundle, tmp_path, capsys):
    bundle = trained_copy(tokenizer_bundle, tmp_path)
    main(["pack", str(bundle), "--out", str(tmp_path / "zoo")])
    run = lambda: main(["pack", str(bundle), "--out", str(tmp_path / "zoo"), "--version", "one"])  # noqa: E731
    handled(KLASS, "slicenav pack", "over an existing archive", tmp_path, run, "--version must be MAJOR", capsys)


@pytest.mark.parametrize("damage", [b'{"hash": "ab', b"\xff\xfe not text"], ids=["truncated", "not_utf8"])
def test_a_damaged_evaluation_cell_is_computed_again(tmp_path, damage):
    from monai_slicenav.experiments.cache import cached

    path = tmp_path / "cell.json"
    path.write_bytes(damage)
    calls = []
    first = cached(path, {"variant": "random", "seed": 0}, lambda: calls.append(1) or {"dice": 0.5})
    assert calls == [1] and first["dice"] == 0.5 and json.loads(path.read_text())["dice"] == 0.5
    again = cached(path, {"variant": "random", "seed": 0}, lambda: calls.append(1) or {"dice": 0.7})
    assert calls == [1] and again["dice"] == 0.5  # reused once it is whole
    record(KLASS, "slicenav evaluate (cells)", f"{damage!r:.12}")
