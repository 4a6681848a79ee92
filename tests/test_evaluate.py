"""The evaluation harness end to end on the micro budget: all files, finite cells, resumable."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from monai_slicenav.cli import main
from monai_slicenav.experiments.dense_probe import regime_stride
from monai_slicenav.experiments.evaluate import BUDGETS, evaluate, seed_list
from monai_slicenav.experiments.variants import CONTROLS, VARIANT_TABLE, dynamics_variants, evaluated_variants

from .packaged_data import needs_packaged_data


@needs_packaged_data
def test_micro_budget_end_to_end_and_resume(tmp_path, capsys):
    rows = evaluate("all", seeds=1, budget="micro", out=tmp_path)
    assert [r["variant"] for r in rows] == list(evaluated_variants())
    assert set(evaluated_variants()) == set(VARIANT_TABLE) | set(CONTROLS)
    for name in ("results.md", "results.csv", "results.png", "run.json"):
        assert (tmp_path / name).stat().st_size > 0
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    columns = ["pose_r2", "gap_r2", "pose_r2_w16", "gap_r2_w16", "seg_dice_n1", "reg_dice"]
    assert all(math.isfinite(float(row[c])) for row in table for c in columns)
    stage2 = ("val_latent_mse", "ctrl_true_warp_syn", "ctrl_true_warp_real")  # the dynamics variants' own columns
    for row in table:
        trained = row["variant"] in dynamics_variants()
        assert all(math.isfinite(float(row[c])) == trained for c in stage2), row["variant"]
        in_context = trained or row["variant"] == "dynamics_untrained"  # every context encoder, the control too
        assert math.isfinite(float(row["pose_r2_ctx"])) == in_context and math.isfinite(float(row["pose_r2_last"]))
        assert math.isfinite(float(row["gap_r2_ctx"])) == in_context and math.isfinite(float(row["gap_r2_last"]))
        assert math.isfinite(float(row["dense_dice_ctx"])) == in_context and 0 < float(row["dense_dice"]) < 1
        assert math.isfinite(float(row["reg_dice_ctx"])) == in_context
        assert math.isfinite(float(row["seg_dice_n1_ctx"])) == in_context
    aligned = tmp_path / "pretrain" / "seed0" / "dynamics_aligned" / "encoder"
    registered = json.loads((tmp_path / "cells" / "dynamics_aligned-seed0" / "registration_ctx.json").read_text())
    stride = regime_stride(aligned, BUDGETS["micro"]["registration"]["spacing_mm"])
    assert registered["config"]["context_stride"] == stride > 1  # context steps at the regime's size, as trained
    segmented = json.loads((tmp_path / "cells/dynamics_aligned-seed0/seg_n1_ctx/models/training.json").read_text())
    assert (segmented["context"], segmented["context_stride"]) == ("causal", stride)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["pretraining_data"].startswith("embedded synthetic") and record["budget"] == "micro"
    assert "mni152_harvard_oxford" in record["evaluation_volumes"]["probe_test"]
    held_out = record["evaluation_volumes"]["controllability"]  # the same test data for every seed
    assert held_out["seeds"] == {"volumes": 1000, "trajectories": 0} and len(held_out["real"]) == 4
    assert -1 < record["pixel_probe_reference"]["pose_r2_last"] <= 1  # the pixel baseline of the same slices
    assert -1 < record["pixel_probe_reference"]["gap_r2_last"] <= 1
    assert 0 < record["pixel_probe_reference"]["dense_dice"] < 1  # and of the dense probe
    assert (
        "| dynamics_aligned - pixels (reference) | dense_dice_ctx - pixels' dense_dice |"
        in (tmp_path / "results.md").read_text()
    )
    assert "| dynamics_aligned: in context - alone |" in (tmp_path / "results.md").read_text()
    reference = record["intensity_registration_reference"]["mean_dice_after"]
    assert 0.0 < reference <= 1.0
    report = (tmp_path / "results.md").read_text().splitlines()
    header = next(line for line in report if line.startswith("| variant |")).strip("| ").split(" | ")
    reference_line = next(line for line in report if "no encoder) |" in line).strip("| ").split(" | ")
    assert reference_line[header.index("reg_dice")] == f"{reference:.3f}"  # in its column, and only there
    assert [cell for cell in reference_line[1:] if cell != "—"] == [f"{reference:.3f}"]
    for probe in ("pose", "gap"):
        assert (
            f"| dynamics_aligned: true - wrong actions | {probe}_r2_ctx - {probe}_r2_ctx_shuffled |"
            in (tmp_path / "results.md").read_text()
        )

    # the control keeps the aligned variant's tokenizer weights under an untrained trunk
    weights = {
        v: torch.load(tmp_path / "pretrain" / "seed0" / v / "encoder" / "encoder.pt", weights_only=True)
        for v in ("dynamics_aligned", "dynamics_untrained")
    }
    trained, control = weights["dynamics_aligned"], weights["dynamics_untrained"]
    assert trained.keys() == control.keys()
    for key in trained:
        if key.startswith("encoder."):  # every tokenizer tensor is kept
            assert torch.equal(trained[key], control[key]), key
        elif key.endswith("weight"):  # every trunk weight is drawn anew
            assert not torch.equal(trained[key], control[key]), key

    cells = sorted((tmp_path / "cells").rglob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    main(
        [
            "evaluate",
            "--variants",
            "random,dynamics_aligned",
            "--seeds",
            "1",
            "--budget",
            "micro",
            "--out",
            str(tmp_path),
        ]
    )
    assert "| dynamics_aligned |" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == stamps[p] for p in cells)  # finished cells are reused, not recomputed


def test_missing_evaluation_volumes_fail_before_pretraining(tmp_path, monkeypatch):
    monkeypatch.setattr("monai_slicenav.experiments.probe_cells.packaged_pairs", lambda: [])
    with pytest.raises(FileNotFoundError, match=r"volumes \['colin27_brain_aal'.* are not installed"):
        evaluate(["static_volume"], seeds=1, budget="micro", out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_bad_arguments():
    with pytest.raises(ValueError, match="budget"):
        evaluate(budget="huge")
    with pytest.raises(ValueError, match="unknown"):
        evaluate(["dynamics_sideways"], budget="micro")
    assert set(BUDGETS) == {"micro", "small", "paper"}
    for bad in (0, (), (1, 1), (-1,)):
        with pytest.raises(ValueError, match="seeds"):
            evaluate("random", seeds=bad, budget="micro")


def test_seeds_are_a_count_or_a_list_and_the_command_line_takes_both(tmp_path, monkeypatch):
    assert seed_list(3) == [0, 1, 2] and seed_list((6, 8)) == [6, 8] and seed_list([5]) == [5]
    asked = []

    def run(*args, **kwargs):
        asked.append(seed_list(kwargs["seeds"]))
        Path(kwargs["out"]).mkdir()
        (Path(kwargs["out"]) / "results.md").write_text("table")

    monkeypatch.setattr("monai_slicenav.cli.run_evaluation", run)
    for given, seeds in (("6,7,8", [6, 7, 8]), ("2", [0, 1])):
        main(["evaluate", "--seeds", given, "--out", str(tmp_path / given)])
        assert asked.pop() == seeds


@needs_packaged_data
def test_own_data_that_holds_nothing_fails_before_pretraining(tmp_path):
    with pytest.raises(FileNotFoundError, match="no NIfTI volumes found"):
        evaluate("random", seeds=1, budget="micro", out=tmp_path / "out", data=tmp_path)
    assert not (tmp_path / "out").exists()


def test_summary_over_seeds_leaves_inapplicable_columns_empty():
    from monai_slicenav.experiments.report import summary

    rows = [{"variant": "random", "seed": s, "pose_r2": 0.1 * s, "ctrl_gap_db_syn": math.nan} for s in range(3)] + [
        {"variant": "dynamics_aligned", "seed": s, "pose_r2": 0.5, "ctrl_gap_db_syn": 1.0 + s} for s in range(3)
    ]
    table = summary(rows)
    assert table["random"]["pose_r2"] == pytest.approx((0.1, 0.1))
    assert all(math.isnan(v) for v in table["random"]["ctrl_gap_db_syn"])
    assert table["dynamics_aligned"]["ctrl_gap_db_syn"] == pytest.approx((2.0, 1.0))


def test_cells_are_computed_once_per_settings_with_a_stub(tmp_path):
    """The hash-and-reuse cache of evaluate and pretrain: same settings reuse the record, other settings or a
    damaged record compute again, and a record failing its check is not reused."""
    from monai_slicenav.experiments.cache import cached, digest, reusable

    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"value": len(calls)}

    path = tmp_path / "cell.json"
    assert cached(path, {"a": 1}, compute)["value"] == 1
    assert cached(path, {"a": 1}, compute)["value"] == 1 and len(calls) == 1  # reused
    assert cached(path, {"a": 2}, compute)["value"] == 2  # settings changed: computed again
    path.write_text("{truncated")
    assert cached(path, {"a": 2}, compute)["value"] == 3  # a damaged record is never trusted
    key = digest({"a": 2})
    assert reusable(path, key)["value"] == 3 and reusable(path, key, lambda record: False) is None
