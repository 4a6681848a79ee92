"""Controllability of a trained stage-2 model: does its next-step prediction use the actions it is given?

For held-out trajectories, the next-step latent error of the model fed

* the true actions (``true``), a derangement of them across the batch (``shuffled``: every trajectory gets another
  one's actions) and zero actions (``zero``),
* against the copy baseline (``copy``: predict z_t+1 = z_t) and a non-learned reference that uses the action
  (``warp``: the current slice warped by the in-plane part of the action -- shift, in-plane rotation, zoom -- then
  encoded by the tokenizer),

and, decoded through the tokenizer, the PSNR of the predicted next slice against the true one with true vs
shuffled actions; their difference in dB is the controllability gap (Genie's delta-t-PSNR). A model that ignores its
actions has true = shuffled = zero and a gap of 0 dB (the ``none`` variant's by construction).

Names of the figures (:data:`METRIC_NAMES`) are the keys of the dicts returned here and the metric names the
dynamics bundle's validation writes to TensorBoard and the stage record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from ignite.metrics import Metric
from monai.transforms import Compose
from torch import nn

from ..geometry import Pose, inplane_warp
from ..networks.dynamics import derange
from ..networks.navigator import SliceNavigator
from ..transforms import EmbeddedVolumed, RandSliceTrajectoryd, RenderSlicesd
from .handlers import unwrap_network

__all__ = [
    "METRIC_NAMES",
    "slice_psnr",
    "inplane_warp",
    "ControllabilityMeter",
    "ControllabilityMetric",
    "controllability",
    "trajectory_batches",
    "held_out_controllability",
    "describe",
]

_BATCH_KEYS = ("image", "actions", "poses")
_FEEDS = ("true", "shuffled", "zero")
_REFERENCES = ("copy", "warp")
METRIC_NAMES = (
    *(f"ctrl_mse_{name}" for name in _FEEDS + _REFERENCES),
    "ctrl_ratio_true_copy",
    "ctrl_ratio_true_shuffled",
    "ctrl_ratio_shuffled_copy",
    "ctrl_ratio_zero_copy",
    "ctrl_ratio_warp_copy",
    "ctrl_ratio_true_warp",
    *(f"ctrl_psnr_{name}" for name in _FEEDS + _REFERENCES),
    "ctrl_psnr_gap_db",
)


def slice_psnr(images: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-slice PSNR (dB) of (..., C, h, w) images in [0, 1] (data range 1), capped at 100 dB for exact copies."""
    mse = ((images.clamp(0, 1) - truth) ** 2).flatten(-3).mean(-1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp_max(100.0)


class ControllabilityMeter:
    """Accumulates the controllability figures over batches of trajectories (sums of per-element errors and of
    per-slice PSNR, so the result does not depend on how the data is batched).

    Args:
        generator: draws the derangements of the actions (seeded: the figures are reproducible).
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.reset()

    def reset(self) -> None:
        names = _FEEDS + _REFERENCES
        self.sums = dict.fromkeys([*(f"mse_{n}" for n in names), *(f"psnr_{n}" for n in names)], 0.0)
        self.elements = 0
        self.slices = 0

    @torch.no_grad()
    def update(
        self, navigator: SliceNavigator, slices: torch.Tensor, actions: torch.Tensor, poses: torch.Tensor
    ) -> None:
        """Add a batch: ``slices`` (B, T, C, h, w) in [0, 1], ``actions`` (B, T - 1, 7), packed ``poses``
        (B, T, 13). Needs B >= 2 for the shuffled feed (a batch of one is skipped for it: counted as true)."""
        was_training = navigator.training
        navigator.eval()
        try:
            self._update(navigator, slices, actions.to(slices.device), torch.as_tensor(poses).to(slices.device))
        finally:
            navigator.train(was_training)

    def _update(
        self, navigator: SliceNavigator, slices: torch.Tensor, actions: torch.Tensor, poses: torch.Tensor
    ) -> None:
        tokenizer = navigator.tokenizer
        tokens = navigator.tokens(slices)
        steps = actions.shape[1]
        current, target = tokens[:, :steps], tokens[:, 1 : steps + 1]
        truth = slices[:, 1 : steps + 1]
        feeds = {"true": actions, "shuffled": derange(actions, self.generator), "zero": torch.zeros_like(actions)}
        spacing = Pose.from_tensor(poses[:, :steps]).spacing
        latents = {name: navigator.predicted_latents(tokens, moves, slices, spacing) for name, moves in feeds.items()}
        images = {name: tokenizer.decode(z.flatten(0, 1)).reshape(truth.shape) for name, z in latents.items()}
        warped = inplane_warp(slices[:, :steps], actions, spacing)
        latents["copy"], images["copy"] = current, slices[:, :steps]
        latents["warp"], images["warp"] = navigator.tokens(warped), warped
        for name, predicted in latents.items():
            self.sums[f"mse_{name}"] += float(((predicted - target) ** 2).sum())
            self.sums[f"psnr_{name}"] += float(slice_psnr(images[name], truth).sum())
        self.elements += target.numel()
        self.slices += truth.shape[0] * truth.shape[1]

    def compute(self) -> dict[str, float]:
        """The figures named in :data:`METRIC_NAMES` (NaN before any update)."""
        if not self.elements:
            return dict.fromkeys(METRIC_NAMES, math.nan)
        mse = {n: self.sums[f"mse_{n}"] / self.elements for n in _FEEDS + _REFERENCES}
        psnr = {n: self.sums[f"psnr_{n}"] / self.slices for n in _FEEDS + _REFERENCES}
        out = {f"ctrl_mse_{n}": v for n, v in mse.items()}
        copy = mse["copy"] if mse["copy"] > 0 else math.nan
        out["ctrl_ratio_true_copy"] = mse["true"] / copy
        out["ctrl_ratio_true_shuffled"] = mse["true"] / mse["shuffled"] if mse["shuffled"] > 0 else math.nan
        out["ctrl_ratio_shuffled_copy"] = mse["shuffled"] / copy
        out["ctrl_ratio_zero_copy"] = mse["zero"] / copy
        out["ctrl_ratio_warp_copy"] = mse["warp"] / copy
        out["ctrl_ratio_true_warp"] = mse["true"] / mse["warp"] if mse["warp"] > 0 else math.nan
        out.update({f"ctrl_psnr_{n}": v for n, v in psnr.items()})
        out["ctrl_psnr_gap_db"] = psnr["true"] - psnr["shuffled"]
        return {name: out[name] for name in METRIC_NAMES}


class ControllabilityMetric(Metric):
    """The controllability figures as an ignite metric of a dynamics evaluator (reset / update / compute), listed
    with its validation metrics (``SupervisedEvaluator(additional_metrics={"controllability": ...})``): each figure
    of :data:`METRIC_NAMES` goes into ``engine.state.metrics`` under its own name, where the stats handlers, the
    checkpoint's key metric and the stage record read it.

    Args:
        network: the evaluated :class:`~monai_slicenav.networks.SliceNavigator` (or a DDP wrapper of it).
        seed: seeds the derangements of the actions; every validation starts from it again, so the figures of two
            validations differ only by what the model learned.
        output_transform: engine output -> (slices (B, T, C, h, w), actions (B, T - 1, 7), packed poses (B, T, 13));
            the default reads what :class:`~monai_slicenav.workflows.PrepareTrajectories` puts in the output
            (``image``, and ``actions`` and ``poses`` among the targets under ``label``).
    """

    def __init__(self, network: nn.Module, seed: int = 0, output_transform=None) -> None:
        self.network, self.seed = network, int(seed)
        transform = output_transform or (lambda out: (out["image"], out["label"]["actions"], out["label"]["poses"]))
        super().__init__(transform, metrics_result_mode="flatten")

    def reset(self) -> None:
        self.meter = ControllabilityMeter(torch.Generator().manual_seed(self.seed))

    def update(self, output: Sequence[torch.Tensor]) -> None:
        slices, actions, poses = output
        self.meter.update(unwrap_network(self.network), slices, actions, poses)

    def compute(self) -> dict[str, float]:
        return self.meter.compute()


def controllability(
    navigator: SliceNavigator, batches: Iterable[Mapping[str, torch.Tensor]], seed: int = 0, image_key: str = "image"
) -> dict[str, float]:
    """The controllability figures of ``navigator`` over ``batches`` of rendered trajectories (dicts holding
    ``image`` (B, T, C, h, w), ``actions`` and ``poses``, as the dynamics bundle's data loader gives them)."""
    meter = ControllabilityMeter(torch.Generator().manual_seed(seed))
    device = next(navigator.parameters()).device
    for batch in batches:
        slices = torch.as_tensor(batch[image_key]).to(device)
        meter.update(navigator, slices, torch.as_tensor(batch["actions"]), torch.as_tensor(batch["poses"]))
    return meter.compute()


def trajectory_batches(
    items: Sequence[Mapping],
    regime: Mapping,
    trajectories_per_volume: int = 16,
    seed: int = 0,
    synth_size: int | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Render held-out trajectories of a recorded navigation ``regime`` (the ``"navigation"`` record of an
    ``encoder.json``: :class:`~monai_slicenav.transforms.RandSliceTrajectoryd`'s keyword arguments) on datalist
    ``items`` (synthetic, packaged or your own files with labels): one batch of ``trajectories_per_volume``
    trajectories per volume, bounded by the label map's foreground, seeded.

    Yields:
        dicts with ``image`` (B, T, 1, h, w), ``actions`` (B, T - 1, 7) and ``poses`` (B, T, 13).
    """
    synth = {"spatial_size": int(synth_size)} if synth_size else {}
    render = Compose(
        [
            EmbeddedVolumed(synth_options=synth),
            RandSliceTrajectoryd("label", num_samples=max(2, int(trajectories_per_volume)), **regime),
            RenderSlicesd("image", spatial_size=regime["spatial_size"]),
        ]
    ).set_random_state(seed)
    for item in items:
        samples = render(dict(item))
        yield {key: torch.stack([torch.as_tensor(s[key]) for s in samples]).float() for key in _BATCH_KEYS}


def held_out_controllability(
    navigator: SliceNavigator,
    regime: Mapping,
    items: Sequence[Mapping],
    trajectories_per_volume: int = 16,
    seed: int = 0,
    synth_size: int | None = None,
) -> dict[str, float]:
    """:func:`controllability` of ``navigator`` on trajectories of ``regime`` rendered on ``items`` (see
    :func:`trajectory_batches`)."""
    batches = trajectory_batches(items, regime, trajectories_per_volume, seed, synth_size)
    return controllability(navigator, batches, seed=seed)


def describe(figures: Mapping[str, float]) -> str:
    """One line summarising controllability ``figures`` (:data:`METRIC_NAMES`) for a person."""
    return (
        f"next-step latent error with true actions {figures['ctrl_ratio_true_copy']:.3f}x the copy baseline "
        f"(shuffled {figures['ctrl_ratio_shuffled_copy']:.3f}x, zero {figures['ctrl_ratio_zero_copy']:.3f}x, "
        f"in-plane warp {figures['ctrl_ratio_warp_copy']:.3f}x); "
        f"true/shuffled {figures['ctrl_ratio_true_shuffled']:.3f}, true/warp {figures['ctrl_ratio_true_warp']:.3f}; "
        f"decoded PSNR {figures['ctrl_psnr_true']:.2f} dB true vs {figures['ctrl_psnr_shuffled']:.2f} dB shuffled "
        f"(gap {figures['ctrl_psnr_gap_db']:+.2f} dB)"
    )
