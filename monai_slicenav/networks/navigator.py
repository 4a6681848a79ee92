"""The stage-2 training model: a frozen slice tokenizer, the latent dynamics transformer on its tokens, and the
optional pose pretext heads; its loss; and open-loop rollouts (imagined navigation)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..geometry import Pose, gap_matrix, inplane_warp
from .dynamics import DynamicsConfig, LatentDynamics
from .pretext import GapHead, PoseHead
from .tokenizer import SliceTokenizer

__all__ = ["SliceNavigator", "NavigationLoss", "rollout", "predict_next"]


class SliceNavigator(nn.Module):
    """Frozen tokenizer + :class:`LatentDynamics` (+ pose heads), trained on rendered trajectories.

    ``forward(slices, actions, spacing=None)`` takes slice stacks (B, T, C, h, w), the actions between them
    (B, T - 1, 7) and the slices' in-plane pixel spacing in mm (B, T) (needed by a ``residual_base="warp"`` model;
    :class:`~monai_slicenav.workflows.PrepareTrajectories` passes the poses' spacing) and returns a dict:
    ``prediction`` (the dynamics output for steps 1 .. T - 1), ``target`` (true latents, or FSQ indices for
    ``fsq_ce``), ``predicted_latents`` / ``true_latents`` (codes, comparable under either objective), and, when the
    heads exist, ``pose`` (B, T - 1, 10) and ``gap`` (B, T - 1, T - 1, 7) from the trunk features of
    steps 0 .. T - 2.

    The tokenizer stays frozen and in eval mode whatever ``train()`` is called with; only the dynamics and the heads
    train (:meth:`trainable_parameters`).

    Args:
        tokenizer: the trained stage-1 tokenizer.
        dynamics: a :class:`LatentDynamics`, its :class:`DynamicsConfig` or the config's fields; ``latent_dim``
            is taken from the tokenizer (and ``codebook_size`` for ``fsq_ce``).
        pose_head: add the absolute pose-vector head.
        gap_head: add the pairwise relative-pose ("gap matrix") head.
    """

    def __init__(
        self,
        tokenizer: SliceTokenizer,
        dynamics: LatentDynamics | DynamicsConfig | Mapping,
        pose_head: bool = False,
        gap_head: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        for parameter in self.tokenizer.parameters():
            parameter.requires_grad_(False)
        if not isinstance(dynamics, LatentDynamics):
            fields = dynamics.to_dict() if isinstance(dynamics, DynamicsConfig) else dict(dynamics)
            fields["latent_dim"] = tokenizer.config.latent_channels
            if fields.get("objective") == "fsq_ce":
                fields["codebook_size"] = tokenizer.quantizer.codebook_size
            dynamics = LatentDynamics(DynamicsConfig(**fields))
        if dynamics.config.latent_dim != tokenizer.config.latent_channels:
            raise ValueError(
                f"The dynamics model expects {dynamics.config.latent_dim} latent channels, the tokenizer makes "
                f"{tokenizer.config.latent_channels}."
            )
        if dynamics.config.objective == "fsq_ce" and tokenizer.config.quantizer != "fsq":
            raise ValueError("objective 'fsq_ce' needs a tokenizer with quantizer='fsq'.")
        self.dynamics = dynamics
        width = dynamics.config.width
        self.pose_head = PoseHead(width) if pose_head else None
        self.gap_head = GapHead(width) if gap_head else None
        self.tokenizer.eval()

    def train(self, mode: bool = True) -> SliceNavigator:
        super().train(mode)
        self.tokenizer.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer should update (everything but the frozen tokenizer)."""
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def tokens(self, slices: torch.Tensor) -> torch.Tensor:
        """Slice stacks (B, T, C, h, w) -> the frozen tokenizer's tokens (B, T, d, h / f, w / f)."""
        if slices.ndim != 5:
            raise ValueError(f"Expected slice stacks (B, T, C, h, w), got shape {tuple(slices.shape)}.")
        codes = self.tokenizer.encode(slices.flatten(0, 1))
        return codes.reshape(*slices.shape[:2], *codes.shape[1:])

    def latents_of(self, prediction: torch.Tensor) -> torch.Tensor:
        """A prediction (B, S, out, h, w) as codes on the tokenizer's grid (argmax for ``fsq_ce``, snapped onto the
        FSQ levels for regression with an FSQ tokenizer)."""
        if self.dynamics.config.objective == "fsq_ce":
            return self.tokenizer.quantizer.indices_to_codes(prediction.argmax(dim=2)).movedim(1, 2)
        if self.tokenizer.config.quantizer == "fsq":
            return self.tokenizer.quantizer.snap(prediction.flatten(0, 1)).reshape(prediction.shape)
        return prediction

    def base(
        self,
        tokens: torch.Tensor,
        seen: torch.Tensor | None,
        slices: torch.Tensor | None = None,
        spacing: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The residual base of S steps: the current token grids (B, S, d, h', w'), or, for ``residual_base="warp"``
        with actions, the tokens of the current slices warped by the in-plane part of the actions the model sees.

        Args:
            tokens: token grids (B, S, d, h', w') of the current slices.
            seen: the actions the model sees from each of them (B, S, 7), or None (no action input).
            slices: the current slices (B, S, C, h, w); None: decoded from ``tokens`` (imagined steps).
            spacing: their in-plane pixel spacing in mm (B, S).

        Raises:
            ValueError: when a warp is needed and ``spacing`` is missing.
        """
        if self.dynamics.config.residual_base != "warp" or seen is None:
            return tokens
        if spacing is None:
            raise ValueError(
                "residual_base='warp' warps each slice by its action and needs the slices' pixel spacing in mm "
                "(B, S): pass spacing (the poses' spacing; PrepareTrajectories does)."
            )
        if slices is None:
            with torch.no_grad():
                decoded = self.tokenizer.decode(tokens.flatten(0, 1)).clamp(0.0, 1.0)
            slices = decoded.reshape(*tokens.shape[:2], *decoded.shape[1:])
        warped = inplane_warp(slices, seen.to(slices.dtype), torch.as_tensor(spacing, device=slices.device))
        return self.tokens(warped)

    def predicted_latents(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        slices: torch.Tensor | None = None,
        spacing: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Codes (B, S, d, h', w') of the slices after each of S steps from token grids (B, >= S, ...) and the
        actions (B, S, 7) as the model is given them (its ``action_mode`` applied); ``slices`` (B, >= S, C, h, w)
        and ``spacing`` (B, >= S) for a warp base (see :meth:`base`)."""
        steps = actions.shape[1]
        seen = self.dynamics.condition(actions)
        features = self.dynamics.features(tokens, seen, steps)
        current = None if slices is None else slices[:, :steps]
        base = self.base(tokens[:, :steps], seen, current, None if spacing is None else spacing[:, :steps])
        return self.latents_of(self.dynamics.predict(features, base))

    def forward(
        self, slices: torch.Tensor, actions: torch.Tensor, spacing: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        tokens = self.tokens(slices)
        if actions.ndim != 3 or tuple(actions.shape[:2]) != (slices.shape[0], slices.shape[1] - 1):
            raise ValueError(
                f"Need slice stacks (B, T, C, h, w) with T >= 2 and actions (B, T - 1, 7); got {tuple(slices.shape)} "
                f"and {tuple(actions.shape)}."
            )
        steps = actions.shape[1]
        seen = self.dynamics.condition(actions)  # drawn once: a shuffled model warps with the actions it sees
        features = self.dynamics.features(tokens, seen, steps)  # (B, T - 1, N, width)
        current_spacing = None if spacing is None else torch.as_tensor(spacing)[:, :steps]
        prediction = self.dynamics.predict(features, self.base(tokens[:, :-1], seen, slices[:, :-1], current_spacing))
        true_latents = tokens[:, 1:]
        if self.dynamics.config.objective == "fsq_ce":
            target = self.tokenizer.quantizer.codes_to_indices(true_latents.movedim(2, 1))  # (B, T - 1, h, w)
        else:
            target = true_latents
        output = {
            "prediction": prediction,
            "target": target,
            "predicted_latents": self.latents_of(prediction.detach()),
            "true_latents": true_latents,
        }
        pooled = features.mean(dim=2)  # (B, T - 1, width): one feature per slice
        if self.pose_head is not None:
            output["pose"] = self.pose_head(pooled)
        if self.gap_head is not None:
            output["gap"] = self.gap_head(pooled)
        return output


class NavigationLoss(nn.Module):
    """Next-step loss of the dynamics (MSE on latents, or cross-entropy on FSQ indices) plus weighted pose losses.

    ``forward(output, target)`` takes the :class:`SliceNavigator` output and a dict holding ``poses`` (B, T, 13,
    packed) for the gap loss and ``pose_vectors`` (B, T, 10) for the pose loss. Gap translations are divided by
    ``gap_scale_mm`` so that the seven action components weigh alike.

    Raises:
        ValueError: for an unknown objective, negative weights, or a weighted head missing from the output.
    """

    def __init__(
        self,
        objective: str = "regression",
        pose_weight: float = 0.0,
        gap_weight: float = 0.0,
        gap_scale_mm: float = 32.0,
    ) -> None:
        super().__init__()
        if objective not in ("regression", "fsq_ce") or min(pose_weight, gap_weight) < 0 or gap_scale_mm <= 0:
            raise ValueError(
                f"objective must be 'regression' or 'fsq_ce', weights >= 0 and gap_scale_mm > 0; got {objective!r}, "
                f"{pose_weight}, {gap_weight}, {gap_scale_mm}."
            )
        self.objective = objective
        self.pose_weight, self.gap_weight, self.gap_scale_mm = float(pose_weight), float(gap_weight), gap_scale_mm

    def forward(self, output: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.objective == "fsq_ce":
            loss = nn.functional.cross_entropy(output["prediction"].flatten(0, 1), output["target"].flatten(0, 1))
        else:
            loss = nn.functional.mse_loss(output["prediction"], output["target"])
        if self.pose_weight > 0:
            steps = output["pose"].shape[1]
            loss = loss + self.pose_weight * nn.functional.mse_loss(output["pose"], target["pose_vectors"][:, :steps])
        if self.gap_weight > 0:
            steps = output["gap"].shape[1]
            gaps = gap_matrix(Pose.from_tensor(target["poses"][:, :steps]))
            scale = torch.ones(gaps.shape[-1], dtype=gaps.dtype, device=gaps.device)
            scale[:3] = 1.0 / self.gap_scale_mm
            loss = loss + self.gap_weight * nn.functional.mse_loss(output["gap"], gaps * scale)
        return loss


@torch.no_grad()
def rollout(
    navigator: SliceNavigator, context: torch.Tensor, actions: torch.Tensor, spacing: torch.Tensor | None = None
) -> torch.Tensor:
    """Open-loop navigation in latent space: from the true tokens of ``k`` context slices (B, k, C, h, w), apply
    ``actions`` (B, k - 1 + K, 7) one step at a time, feeding each prediction back as the next input.

    Args:
        navigator: the trained model.
        context: the true slices the rollout starts from.
        actions: the actions between them and the K after them.
        spacing: the context slices' in-plane pixel spacing in mm (B, k), needed by a ``residual_base="warp"``
            model (the imagined slices' spacing follows the zoom component of each action).

    Returns:
        the imagined token grids of the K future steps (B, K, d, h / f, w / f); decode with
        ``navigator.tokenizer.decode``.

    Raises:
        ValueError: when the actions do not extend past the context, or the sequence exceeds ``max_steps``.
    """
    tokens = navigator.tokens(context)
    k, total = tokens.shape[1], actions.shape[1] + 1
    if actions.ndim != 3 or total <= k or total > navigator.dynamics.config.max_steps:
        raise ValueError(
            f"Need actions (B, k - 1 + K, 7) with K >= 1 and k + K <= max_steps "
            f"({navigator.dynamics.config.max_steps}); got {k} context slices and actions {tuple(actions.shape)}."
        )
    current = None if spacing is None else torch.as_tensor(spacing, device=actions.device)[:, -1]
    for step in range(k, total):
        image = context[:, -1] if step == k else None  # imagined slices are decoded from their tokens
        tokens = torch.cat([tokens, predict_next(navigator, tokens, actions[:, :step], image, current)], dim=1)
        if current is not None:
            current = current * torch.exp(actions[:, step - 1, 6])
    return tokens[:, k:]


@torch.no_grad()
def predict_next(
    navigator: SliceNavigator,
    tokens: torch.Tensor,
    actions: torch.Tensor,
    current_slice: torch.Tensor | None = None,
    spacing: torch.Tensor | None = None,
) -> torch.Tensor:
    """The next slice's token grid (B, 1, d, h', w') from the token grids of the slices so far (B, k, d, h', w')
    and the actions after each of them (B, k, 7): the ``k - 1`` between them and the one just taken, as codes
    on the tokenizer's grid (decode with ``navigator.tokenizer.decode``).

    A ``residual_base="warp"`` model also takes the last slice ``current_slice`` (B, C, h, w; None: decoded from its
    tokens) and its in-plane pixel spacing in mm ``spacing`` (B,)."""
    dynamics = navigator.dynamics
    seen = dynamics.condition(actions)
    features = dynamics.features(tokens, seen, actions.shape[1])[:, -1:]
    base = navigator.base(
        tokens[:, -1:],
        None if seen is None else seen[:, -1:],
        None if current_slice is None else current_slice[:, None],
        None if spacing is None else torch.as_tensor(spacing).reshape(-1, 1),
    )
    return navigator.latents_of(dynamics.predict(features, base))
