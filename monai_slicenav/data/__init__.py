"""Where volumes come from: the embedded default (generated or installed by packages), a user's own scans, public
datasets described by manifests, the phantom, and the labelled templates of the downstream bundles. Nothing here
downloads anything."""

from .datalists import (
    VOLUME_SUFFIXES,
    describe_data,
    embedded_datalist,
    file_datalist,
    pretraining_datalist,
    screen_volume,
    split_items,
    synthetic_seed,
    user_datalist,
    volume_files,
)
from .labelled import COARSE_LABELS, coarse_label_names, fewshot_split, labelled_case, load_coarse_labels, missing_image
from .manifests import Problem, case_split, check_manifest, load_manifest, manifest_datalist, sha256_of
from .packaged import (
    PairCheck,
    check_pair,
    grid_relation,
    load_packaged_manifest,
    locate_volume,
    manifest_dir,
    packaged_pairs,
)
from .phantom import shepp_logan_volume
from .screened import ScreenedVolumeDataset, file_item_hash, preprocessing_hash

__all__ = [
    "VOLUME_SUFFIXES",
    "describe_data",
    "embedded_datalist",
    "file_datalist",
    "pretraining_datalist",
    "screen_volume",
    "split_items",
    "synthetic_seed",
    "user_datalist",
    "volume_files",
    "COARSE_LABELS",
    "coarse_label_names",
    "fewshot_split",
    "labelled_case",
    "load_coarse_labels",
    "missing_image",
    "Problem",
    "case_split",
    "check_manifest",
    "load_manifest",
    "manifest_datalist",
    "sha256_of",
    "PairCheck",
    "check_pair",
    "grid_relation",
    "load_packaged_manifest",
    "locate_volume",
    "manifest_dir",
    "packaged_pairs",
    "shepp_logan_volume",
    "ScreenedVolumeDataset",
    "file_item_hash",
    "preprocessing_hash",
]
