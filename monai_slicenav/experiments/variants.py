"""The one table of pretraining variants: which bundle trains each (with which fixed overrides, on top of which
stage), which network class it trains, what it exports, and whether it needs label maps.

``slicenav pretrain`` runs a variant from its entry, ``slicenav evaluate`` takes its rows and its up-front checks
from it, and the command-line help lists it. A new variant that reuses an existing bundle with other overrides is
one :func:`register_variant` call::

    register_variant(Variant("tokenizer_ssim", "slicenav_tokenizer", SliceTokenizer, "the tokenizer, SSIM-heavy",
                             overrides={"ssim_weight": 0.8}))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from torch import nn

from ..networks.contrastive import VoxelContrastiveNet
from ..networks.navigator import SliceNavigator
from ..networks.tokenizer import SliceTokenizer
from ..networks.volume_mae import VolumeMAE

__all__ = [
    "CONTROLS",
    "TOKENIZER_BUNDLE",
    "Variant",
    "VARIANT_TABLE",
    "dynamics_variants",
    "evaluated_variants",
    "get_variant",
    "register_variant",
    "variant_help",
    "variant_names",
]

TOKENIZER_BUNDLE = "slicenav_tokenizer"  # stage 1, shared by every variant trained on top of a tokenizer

CONTROLS: Mapping[str, str] = MappingProxyType(
    {  # rows of the comparison with no pretraining of their own
        "random": "randomly initialised tokenizer encoder, the floor",
        "dynamics_untrained": "control, the stage-1 tokenizer under a seeded untrained dynamics trunk",
    }
)


@dataclass(frozen=True)
class Variant:
    """One pretraining variant.

    Args:
        name: the variant's name (``slicenav pretrain NAME``).
        bundle: the bundle that trains the variant's encoder.
        network: the network class that bundle trains.
        summary: a few words for the command-line help (no colon: the help parser reads one as a new argument).
        overrides: fixed ``ConfigWorkflow`` overrides of ``bundle`` that make this variant.
        on_tokenizer: trained on top of a frozen stage-1 tokenizer (the tokenizer bundle gets half the steps,
            shared by every such variant and trained once per cache).
        exports: the export folders of ``bundle``'s run (``models/<folder>``) and where ``slicenav pretrain`` copies
            them under ``OUT``; ``OUT/encoder`` is always the variant's encoder.
        needs_labels: learns from label maps (the synthetic engine): refused with unlabelled ``--data``.
        controllability: a stage-2 dynamics model whose use of its actions is measured.
    """

    name: str
    bundle: str
    network: type[nn.Module]
    summary: str
    overrides: Mapping = field(default_factory=dict)
    on_tokenizer: bool = False
    exports: Mapping[str, str] = field(default_factory=lambda: {"encoder": "encoder"})
    needs_labels: bool = False
    controllability: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        """The bundles trained, in order."""
        return (TOKENIZER_BUNDLE, self.bundle) if self.on_tokenizer else (self.bundle,)

    @property
    def trains_tokenizer(self) -> bool:
        """Whether a slice tokenizer stage is among its stages (it then takes ``--contrastive_weight``)."""
        return TOKENIZER_BUNDLE in self.stages

    @property
    def min_steps(self) -> int:
        """The fewest steps of a budget: one per stage."""
        return len(self.stages)


def _dynamics(action_mode: str, summary: str) -> Variant:
    return Variant(
        f"dynamics_{action_mode}",
        "slicenav_dynamics",
        SliceNavigator,
        summary,
        overrides={"action_mode": action_mode},
        on_tokenizer=True,
        exports={"context_encoder": "encoder", "encoder": "slice_encoder"},
        controllability=True,
    )


VARIANT_TABLE: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("static_volume", "static_volume_baseline", VolumeMAE, "3D masked autoencoder on crops, the baseline"),
        Variant(
            "voxel_contrastive",
            "voxel_contrastive",
            VoxelContrastiveNet,
            "the baseline's 3D encoder, multi-positive voxel contrastive across two appearances of label maps",
            needs_labels=True,
        ),
        Variant(
            "tokenizer_only",
            TOKENIZER_BUNDLE,
            SliceTokenizer,
            "stage 1 alone, the slice tokenizer",
        ),
        _dynamics("none", "stage 2 without actions"),
        _dynamics("shuffled", "stage 2 with actions shuffled across the batch"),
        _dynamics("aligned", "the method, stage 2 with the true actions"),
    )
}
"""Every variant by name, in the order of the comparison table (baselines first, the method last)."""


def register_variant(variant: Variant, replace: bool = False) -> Variant:
    """Add ``variant`` to :data:`VARIANT_TABLE` (before the method's row, so the method stays last).

    Raises:
        ValueError: for a name already taken (unless ``replace``) or a control's name.
    """
    if variant.name in CONTROLS or (variant.name in VARIANT_TABLE and not replace):
        raise ValueError(f"variant {variant.name!r} already exists.")
    VARIANT_TABLE.pop(variant.name, None)
    last = VARIANT_TABLE.popitem()
    VARIANT_TABLE.update({variant.name: variant, last[0]: last[1]})
    return variant


def get_variant(name: str) -> Variant:
    """The table entry of ``name``.

    Raises:
        ValueError: naming the known variants.
    """
    if name not in VARIANT_TABLE:
        raise ValueError(f"variant must be one of {variant_names()}, got {name!r}.")
    return VARIANT_TABLE[name]


def variant_names() -> tuple[str, ...]:
    """The pretraining variants, in table order."""
    return tuple(VARIANT_TABLE)


def dynamics_variants() -> tuple[str, ...]:
    """The variants whose stage 2 is measured for controllability (aligned, none, shuffled actions)."""
    return tuple(name for name, v in VARIANT_TABLE.items() if v.controllability)


def evaluated_variants() -> tuple[str, ...]:
    """The rows of ``slicenav evaluate``, in order: ``random``, the variants without a tokenizer stage, then those
    with one, the ``dynamics_untrained`` control before the trained dynamics rows."""
    rows = ["random"]
    for name, variant in VARIANT_TABLE.items():
        if variant.controllability and "dynamics_untrained" not in rows:
            rows.append("dynamics_untrained")
        rows.append(name)
    return tuple(rows)


def variant_help(controls: bool = False) -> str:
    """The variants (and, with ``controls``, the evaluation's control rows) as ``name: summary`` lines."""
    entries = {**(dict(CONTROLS) if controls else {}), **{n: v.summary for n, v in VARIANT_TABLE.items()}}
    names = evaluated_variants() if controls else variant_names()
    return "\n".join(f"{name}: {entries[name]}" for name in names if name in entries)
