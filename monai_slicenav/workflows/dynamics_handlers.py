"""What the dynamics bundle's workflows add to the shared handlers: navigation strips (true slices, tokenizer
reconstructions, next-step predictions and open-loop rollouts) and the rollout writer."""

from __future__ import annotations

import torch
from ignite.engine import Engine

from ..geometry import Pose
from ..io import atomic_write_files, json_bytes, png_bytes
from ..networks.navigator import SliceNavigator, rollout
from ..transforms.navigation import trajectory_to_dict
from .handlers import ItemWriter, StripHandler, unwrap_network

__all__ = ["STRIP_ROWS", "navigation_strip", "NavigationStripHandler", "RolloutWriter"]


STRIP_ROWS = ("true slice", "tokenizer reconstruction", "next-step prediction", "open-loop rollout")


@torch.no_grad()
def navigation_strip(
    navigator: SliceNavigator,
    slices: torch.Tensor,
    actions: torch.Tensor,
    max_slices: int = 8,
    spacing: torch.Tensor | None = None,
) -> torch.Tensor:
    """A (4 h, n w) image of one trajectory's steps 1 .. n (rows: :data:`STRIP_ROWS`): the true slices, the
    tokenizer's reconstructions of them, the dynamics' next-step predictions (from the true past) and an open-loop
    rollout from slice 0 and the actions alone, each decoded through the tokenizer; clipped to [0, 1].

    Args:
        navigator: the trained model.
        slices: one trajectory (T, C, h, w).
        actions: its actions (T - 1, 7).
        max_slices: at most this many steps are shown.
        spacing: the slices' in-plane pixel spacing in mm (T,) (needed by a ``residual_base="warp"`` model).
    """
    n = min(max_slices, len(slices) - 1)
    stack, moves = slices[None, : n + 1], actions[None, :n]
    along = None if spacing is None else torch.as_tensor(spacing, device=slices.device)[None, : n + 1]
    decode = navigator.tokenizer.decode
    all_tokens = navigator.tokens(stack)
    tokens = all_tokens[0, 1:]
    predicted = navigator.predicted_latents(all_tokens, moves, stack, along)[0]
    imagined = rollout(navigator, stack[:, :1], moves, None if along is None else along[:, :1])[0]
    rows = [stack[0, 1:], decode(tokens), decode(predicted), decode(imagined)]
    images = [torch.cat(list(row[:, 0].float().cpu()), dim=1) for row in rows]
    return torch.cat(images, dim=0).clamp(0.0, 1.0)


class NavigationStripHandler(StripHandler):
    """Log :func:`navigation_strip` of the first trajectory of the engine's last batch (rows: true slices,
    reconstructions, next-step predictions, open-loop rollout); arguments as :class:`StripHandler`."""

    default_tag = "true_recon_prediction_rollout"

    def strip(self, engine: Engine) -> torch.Tensor:
        navigator = unwrap_network(engine.network)
        slices, actions = engine.state.output["image"][0], engine.state.batch["actions"][0].to(engine.state.device)
        spacing = Pose.from_tensor(engine.state.batch["poses"][0]).spacing
        return navigation_strip(navigator, slices, actions, self.max_slices, spacing)


class RolloutWriter(ItemWriter):
    """Write, for each inferred trajectory, ``rollout.png`` (:func:`navigation_strip`: the true render above the
    imagined navigation), ``rollout.json`` (latent MSE per step of the next-step predictions and of the open-loop
    rollout) and ``trajectory.json`` (poses and actions) under ``<out_dir>/<name>``, atomically; arguments as
    :class:`ItemWriter` (``max_slices``: steps shown and scored).
    """

    def __call__(self, engine: Engine) -> None:
        navigator = unwrap_network(engine.network)
        batch = engine.state.batch
        slices, actions = engine.state.output["image"][0], batch["actions"][0].to(engine.state.device)
        n = min(self.max_slices, len(slices) - 1)
        with torch.no_grad():
            truth = navigator.tokens(slices[None, : n + 1])[0, 1:]
            predicted = navigator.latents_of(engine.state.output["pred"]["prediction"][:1, :n])[0]
            spacing = Pose.from_tensor(batch["poses"][0]).spacing.to(engine.state.device)
            imagined = rollout(navigator, slices[None, :1], actions[None, :n], spacing[None, :1])[0]
        scores = {
            "steps": n,
            "next_step_latent_mse": ((predicted - truth) ** 2).mean(dim=(1, 2, 3)).tolist(),
            "rollout_latent_mse": ((imagined - truth) ** 2).mean(dim=(1, 2, 3)).tolist(),
            "rows": list(STRIP_ROWS),
        }
        record = trajectory_to_dict(Pose.from_tensor(batch["poses"][0]), batch["actions"][0], slices.shape[-2:])
        target = self.item_dir(engine)
        atomic_write_files(
            {
                target / "rollout.png": png_bytes(
                    navigation_strip(navigator, slices, actions, self.max_slices, spacing)
                ),
                target / "rollout.json": json_bytes(scores),
                target / "trajectory.json": json_bytes(record),
            }
        )
