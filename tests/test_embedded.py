import nibabel
import pytest
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, RandomizableTrait

from monai_slicenav.data import embedded_datalist
from monai_slicenav.transforms import (
    EmbeddedVolumed,
    LoadVolumed,
    RandSliceTrajectoryd,
    RenderSlicesd,
    tissue_labels,
)
from monai_slicenav.transforms.synth import SynthLabelEnsemble

SYNTH = {"spatial_size": 32, "spacing": 2.0, "num_labels": (4, 6)}


def navigation_chain() -> Compose:
    return Compose(
        [
            EmbeddedVolumed(synth_options=SYNTH),
            RandSliceTrajectoryd("label", num_steps=3, spatial_size=32),
            RenderSlicesd(("image", "label"), 32, mode=("bilinear", "nearest")),
        ]
    ).set_random_state(0)


def test_tissue_labels():
    grey = torch.tensor([200.0, 20.0, 10.0, 100.0])
    white = torch.tensor([30.0, 220.0, 5.0, 100.0])
    assert tissue_labels(grey, white).tolist() == [1, 2, 0, 1]  # ties favour the earlier class


def test_synthetic_items():
    (item,) = embedded_datalist(1, seed=3, include_packaged=False)
    out = EmbeddedVolumed(synth_options=SYNTH).set_random_state(0)(item)
    assert torch.equal(out["label"], SynthLabelEnsemble(**SYNTH)(item["synth_seed"]))
    assert (
        out["image"].shape == (1, 32, 32, 32) and 0.0 <= float(out["image"].min()) <= float(out["image"].max()) <= 1.0
    )
    rendered = navigation_chain()(item)
    assert rendered["image"].shape == (4, 1, 32, 32) and bool(torch.isfinite(rendered["image"]).all())


def test_packaged_items_become_finite_slices():
    packaged = [item for item in embedded_datalist(1) if item["source"] == "packaged"]
    if not packaged:
        pytest.skip("no packaged volumes installed (pip install '.[data]' or apt-get install mricron-data)")
    chain = navigation_chain()
    for item in packaged:
        loaded = EmbeddedVolumed()(item)
        image, label = loaded["image"], loaded["label"]
        assert image.shape[1:] == label.shape[1:], item["name"]
        torch.testing.assert_close(image.affine, label.affine, atol=1e-3, rtol=0)
        assert float(image.max()) == 1.0 and int(label.max()) >= 2 and label.dtype == torch.int64
        out = chain(item)
        assert bool(torch.isfinite(out["image"]).all()) and float(out["image"].std()) > 0.01, item["name"]


def test_unknown_source():
    with pytest.raises(ValueError, match="unknown source None in item x; expected 'synthetic'"):
        EmbeddedVolumed()({"name": "x"})
    (synthetic,) = embedded_datalist(1, include_packaged=False)
    with pytest.raises(ValueError, match="unknown source 'synthetic'.*expected 'packaged' or 'file'"):
        LoadVolumed()(synthetic)


def test_load_volumed_is_deterministic_and_cached(tmp_path):
    """Real volumes load without randomness, so CacheDataset keeps the load and what follows it."""
    image = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
    path = tmp_path / "own.nii.gz"
    nibabel.save(nibabel.Nifti1Image(image[0].numpy(), 2.0 * torch.eye(4).numpy()), path)
    item = {"source": "file", "image": str(path)}
    assert not isinstance(LoadVolumed(), RandomizableTrait) and isinstance(EmbeddedVolumed(), RandomizableTrait)
    loaded = LoadVolumed()(item)["image"]
    torch.testing.assert_close(loaded, EmbeddedVolumed()(item)["image"])
    assert float(loaded.min()) == 0.0 and float(loaded.max()) == 1.0
    dataset = CacheDataset([item], Compose([LoadVolumed()]), cache_rate=1.0, progress=False)
    path.unlink()  # served from the cache from now on
    torch.testing.assert_close(dataset[0]["image"], loaded)


def test_synthetic_items_use_the_disk_cache(tmp_path):
    (item,) = embedded_datalist(1, seed=5, include_packaged=False)
    front = EmbeddedVolumed(synth_options={**SYNTH, "cache_dir": tmp_path}).set_random_state(0)
    first = front(item)["label"]
    assert len(list(tmp_path.glob(f"synth_label_*_{item['synth_seed']}.nii.gz"))) == 1
    assert torch.equal(front(item)["label"].as_tensor(), first.as_tensor())


def test_bad_intensity_percentiles_are_refused_when_the_loader_is_built():
    from monai_slicenav.transforms import LoadVolumed

    with pytest.raises(ValueError, match="percentiles must satisfy"):
        LoadVolumed(percentiles=(99.5, 0.5))
