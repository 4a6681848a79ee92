"""Stage 2: an action-conditioned latent dynamics transformer over the frozen tokenizer's token grids.

Input: token grids of a slice sequence (B, T, d, h, w) and the actions between consecutive slices (B, T - 1, 7)
(``actions[:, t]`` moves slice t to slice t + 1). Output: a prediction of the token grid of slice t + 1 from slices
``<= t`` and actions ``<= t``, for every t < T - 1.

Design choices:
* Tokens of a step are grouped into ``patch x patch`` blocks (one transformer token each) so that sequences stay
  short enough for CPU training; positions get learned spatial and temporal embeddings.
* Attention is block-causal: a token of step t attends every token of steps ``<= t`` (spatial attention within the
  step, causal across steps). Predictions for steps ``<= t`` therefore never depend on later slices or actions.
* Actions are divided by ``action_scale`` (the navigation regime's per-step bounds: mm, radians and log-zoom on
  one scale) before a small MLP embeds them. ``conditioning="add"`` adds the embedding to every token of its step
  (no extra sequence length); ``conditioning="token"`` appends it as one extra token per step (as the action
  tokens of V-JEPA 2-AC and DINO-WM), which attention can read selectively. The extra token is dropped from the
  outputs.
* ``residual=True`` predicts the change from a base (z_t+1 = base + head), so the trunk spends its capacity on what
  the action changes rather than on copying. ``residual_base="current"``: the current step's latents;
  ``residual_base="warp"``: the latents of the current slice warped by the in-plane part of the action the model is
  given (shift, in-plane rotation, zoom: known geometry, applied exactly), so the network learns what a warp cannot
  (scrolling and tilting through the volume). The warp needs the slice and its pixel spacing, so a ``"warp"`` base
  is computed by :class:`~monai_slicenav.networks.SliceNavigator` and passed to :meth:`LatentDynamics.forward`;
  a model without actions (``action_mode="none"``) has nothing to warp with and keeps the current latents.
* ``action_mode``: ``"aligned"`` uses the true actions, ``"none"`` drops the action input entirely, and
  ``"shuffled"`` gives every trajectory another one's actions while training (a random derangement of the batch,
  drawn from torch's global generator, which the bundles reseed at every epoch: a resumed run deranges as an
  uninterrupted one does) — the ablations of the method's claim; data, budget and everything else stay the same.
  In eval mode a ``"shuffled"`` model sees the actions it is given, so evaluations feed every model the same inputs.
* Targets: regression onto the next step's latents (``objective="regression"``, MSE), or cross-entropy over FSQ
  indices (``objective="fsq_ce"``, needs ``codebook_size``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..geometry import ACTION_DIM

__all__ = [
    "DynamicsConfig",
    "LatentDynamics",
    "ACTION_MODES",
    "OBJECTIVES",
    "CONDITIONINGS",
    "RESIDUAL_BASES",
    "block_causal_mask",
    "derange",
]

ACTION_MODES = ("aligned", "none", "shuffled")
OBJECTIVES = ("regression", "fsq_ce")
CONDITIONINGS = ("add", "token")
RESIDUAL_BASES = ("current", "warp")


@dataclass
class DynamicsConfig:
    """Hyper-parameters of :class:`LatentDynamics` (stored with checkpoints and exports)."""

    latent_dim: int = 4  # d: channels of the tokenizer's token grid
    grid_size: tuple[int, int] = (16, 16)  # (h, w) of a step's token grid
    max_steps: int = 16  # longest sequence T
    patch: int = 2  # tokens grouped per side into one transformer token
    width: int = 128  # transformer width
    depth: int = 4  # transformer layers
    heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # feed-forward width / width
    dropout: float = 0.0
    action_mode: str = "aligned"  # "aligned" | "none" | "shuffled"
    objective: str = "regression"  # "regression" | "fsq_ce"
    codebook_size: int = 0  # FSQ codebook size, for objective "fsq_ce"
    conditioning: str = "add"  # "add" (embedding added to the step's tokens) | "token" (one action token per step)
    residual: bool = False  # predict the change from a base (regression only)
    residual_base: str = "current"  # "current" (z_t) | "warp" (the current slice warped by the in-plane action)
    action_scale: tuple[float, ...] = (1.0,) * ACTION_DIM  # actions are divided by these before the embedding

    def __post_init__(self) -> None:
        self.grid_size = (int(self.grid_size[0]), int(self.grid_size[1]))
        self.action_scale = tuple(float(a) for a in self.action_scale)
        if len(self.action_scale) != ACTION_DIM or not all(a > 0 for a in self.action_scale):
            raise ValueError(f"action_scale must be {ACTION_DIM} positive numbers, got {self.action_scale}.")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}.")
        if self.residual_base not in RESIDUAL_BASES:
            raise ValueError(f"residual_base must be one of {RESIDUAL_BASES}, got {self.residual_base!r}.")
        if self.residual_base != "current" and not self.residual:
            raise ValueError(
                f"residual_base {self.residual_base!r} is the base of a residual model: set residual=True."
            )
        if self.residual and self.objective != "regression":
            raise ValueError("residual=True predicts a change of latents: it needs objective 'regression'.")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}.")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}.")
        if self.objective == "fsq_ce" and self.codebook_size < 2:
            raise ValueError("objective 'fsq_ce' needs codebook_size >= 2 (the tokenizer's FSQ codebook).")
        if self.grid_size[0] % self.patch or self.grid_size[1] % self.patch:
            raise ValueError(f"grid_size {self.grid_size} must be divisible by patch {self.patch}.")
        if self.width % self.heads or min(self.latent_dim, self.max_steps, self.depth, self.heads, self.patch) < 1:
            raise ValueError(f"invalid sizes in {self}: width must divide by heads and all sizes be >= 1.")

    @property
    def tokens_per_step(self) -> int:
        return (self.grid_size[0] // self.patch) * (self.grid_size[1] // self.patch)

    def to_dict(self) -> dict:
        return asdict(self)


def block_causal_mask(steps: int, tokens_per_step: int, device: torch.device | None = None) -> torch.Tensor:
    """(L, L) bool mask for ``nn.MultiheadAttention`` (True = blocked): token i of step s(i) may attend token j iff
    s(j) <= s(i)."""
    step_of = torch.arange(steps, device=device).repeat_interleave(tokens_per_step)  # (L,)
    return step_of[None, :] > step_of[:, None]


def derange(rows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random derangement of ``rows`` along dim 0: every row moves to another position, never its own (rows are
    returned unchanged when there is only one)."""
    if len(rows) < 2:
        return rows
    order = torch.randperm(len(rows), generator=generator).to(rows.device)
    moved = rows.clone()
    moved[order] = rows[order.roll(-1)]
    return moved


class LatentDynamics(nn.Module):
    """Predict the next slice's tokens from past token grids and actions (see the module docstring).

    Args:
        config: a :class:`DynamicsConfig`, or its fields as keyword arguments.

    Example::

        model = LatentDynamics(latent_dim=4, grid_size=(16, 16), max_steps=8, residual_base="current")
        pred = model(tokens, actions)  # tokens (B, 8, 4, 16, 16), actions (B, 7, 7) -> (B, 7, 4, 16, 16)
    """

    def __init__(self, config: DynamicsConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is not None and kwargs:
            raise TypeError("Give either a DynamicsConfig or keyword arguments, not both.")
        self.config = cfg = config if config is not None else DynamicsConfig(**kwargs)
        patch_dim = cfg.latent_dim * cfg.patch**2
        self.embed = nn.Linear(patch_dim, cfg.width)
        self.space = nn.Parameter(torch.zeros(1, 1, cfg.tokens_per_step, cfg.width))
        self.time = nn.Parameter(torch.zeros(1, cfg.max_steps, 1, cfg.width))
        self.action = nn.Sequential(nn.Linear(ACTION_DIM, cfg.width), nn.GELU(), nn.Linear(cfg.width, cfg.width))
        self.register_buffer("action_scale", torch.tensor(cfg.action_scale), persistent=False)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, int(cfg.width * cfg.mlp_ratio), cfg.dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.trunk = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        out_per_token = cfg.codebook_size if cfg.objective == "fsq_ce" else cfg.latent_dim
        self.head = nn.Linear(cfg.width, out_per_token * cfg.patch**2)
        if cfg.residual:  # start from the copy baseline (z_t+1 = z_t) rather than from noise added to it
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.space, std=0.02)
        nn.init.normal_(self.time, std=0.02)

    def condition(self, actions: torch.Tensor) -> torch.Tensor | None:
        """The actions the model sees under its ``action_mode`` (None for ``"none"``; for ``"shuffled"`` while
        training, another trajectory's actions, never its own)."""
        mode = self.config.action_mode
        if mode == "none":
            return None
        if mode == "shuffled" and self.training:
            return derange(actions)
        return actions

    def _patchify(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, d, h, w = tokens.shape
        p = self.config.patch
        if h % p or w % p:
            raise ValueError(f"token grids ({h}, {w}) must have sides divisible by patch {p}.")
        x = tokens.reshape(b, t, d, h // p, p, w // p, p)  # (B, T, d, h/p, p, w/p, p)
        return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, t, (h // p) * (w // p), d * p * p)  # (B, T, N, d p p)

    def _unpatchify(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        b, t, _, _ = x.shape
        p = self.config.patch
        gh, gw = self.config.grid_size[0] // p, self.config.grid_size[1] // p
        x = x.reshape(b, t, gh, gw, channels, p, p).permute(0, 1, 4, 2, 5, 3, 6)  # (B, T, C, h/p, p, w/p, p)
        return x.reshape(b, t, channels, gh * p, gw * p)

    def _check(self, tokens: torch.Tensor, seen: torch.Tensor | None, steps: int) -> None:
        cfg = self.config
        if tokens.ndim != 5 or tokens.shape[2] != cfg.latent_dim:
            raise ValueError(f"tokens must be (B, T, {cfg.latent_dim}, h, w), got {tuple(tokens.shape)}.")
        b, t = tokens.shape[:2]
        if not 1 <= steps <= min(t, cfg.max_steps) or (
            seen is not None and tuple(seen.shape) != (b, steps, ACTION_DIM)
        ):
            raise ValueError(
                f"Need 1 <= steps <= T and steps <= {cfg.max_steps}, and actions (B, steps, {ACTION_DIM}); got tokens "
                f"{tuple(tokens.shape)}, {steps} steps and actions {None if seen is None else tuple(seen.shape)}."
            )

    def features(self, tokens: torch.Tensor, seen: torch.Tensor | None, steps: int) -> torch.Tensor:
        """Trunk features (B, S, N, width) of the first S = ``steps`` steps of token grids (B, >= S, d, h, w): step
        s sees the token grids of steps ``<= s`` and the actions ``<= s`` (``seen[:, s]`` leads from step s to
        s + 1). ``seen`` are the actions as the model sees them, :meth:`condition` of the true ones (None for
        ``action_mode="none"``), drawn once by the caller, which may also warp with them.

        Token grids of another size than ``grid_size`` (sides multiples of ``patch``) get the learned spatial
        embedding resized bilinearly, as ViTs do for new image sizes, so encoders apply to any slice size.

        Raises:
            ValueError: for shapes that do not match the config or each other.
        """
        cfg = self.config
        s = int(steps)
        self._check(tokens, seen, s)
        b = tokens.shape[0]
        x = self.embed(self._patchify(tokens[:, :s])) + self._space(tokens.shape[-2:]) + self.time[:, :s]
        spatial = x.shape[2]
        if seen is not None:
            moves = self.action(seen / self.action_scale)  # (B, S, width)
            if cfg.conditioning == "add":  # the action of step s reaches every token of step s
                x = x + moves[:, :, None, :]
            else:  # one more token per step, visible to that step's tokens and later ones
                x = torch.cat([x, (moves + self.time[:, :s, 0])[:, :, None, :]], dim=2)
        n = x.shape[2]
        x = self.trunk(x.reshape(b, s * n, cfg.width), mask=block_causal_mask(s, n, x.device))
        return self.norm(x).reshape(b, s, n, cfg.width)[:, :, :spatial]

    def _space(self, grid: Sequence[int]) -> torch.Tensor:
        p = self.config.patch
        trained = tuple(g // p for g in self.config.grid_size)
        wanted = (grid[0] // p, grid[1] // p)
        if wanted == trained:
            return self.space
        table = self.space.reshape(1, *trained, -1).permute(0, 3, 1, 2)
        resized = nn.functional.interpolate(table, size=wanted, mode="bilinear", align_corners=False)
        return resized.permute(0, 2, 3, 1).reshape(1, 1, wanted[0] * wanted[1], -1)

    def forward(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        base: torch.Tensor | Callable[[torch.Tensor | None], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Predictions for steps 1 .. T - 1 from token grids (B, T, d, h, w) and the actions between them
        (B, T - 1, 7): (B, T - 1, d, h, w) latents (regression) or (B, T - 1, codebook_size, h, w) logits
        (``fsq_ce``). The one entry point for every config; :class:`~monai_slicenav.networks.SliceNavigator` adds
        the slices, the frozen tokenizer and the pose heads around it.

        Args:
            base: the residual base of a ``residual`` model: the token grids (B, T - 1, d, h, w), or a function of
                the actions the model sees (:meth:`condition`, drawn once here) that returns them, as a
                ``residual_base="warp"`` model needs (``SliceNavigator.base`` warps the slices with those actions).
                None: the current token grids (``residual_base="current"``, or no action input).

        Raises:
            ValueError: for shapes that do not match, or a warp-base model with actions given no ``base``.
        """
        if actions.ndim != 3 or tokens.ndim != 5 or tuple(actions.shape[:2]) != (tokens.shape[0], tokens.shape[1] - 1):
            raise ValueError(
                f"Need token grids (B, T, d, h, w) and actions (B, T - 1, {ACTION_DIM}); got tokens "
                f"{tuple(tokens.shape)} and actions {tuple(actions.shape)}."
            )
        steps = actions.shape[1]
        seen = self.condition(actions)
        if callable(base):
            base = base(seen)
        if base is None and self.config.residual and self.config.residual_base == "warp" and seen is not None:
            raise ValueError(
                "A dynamics model with residual_base='warp' adds its change to the warped current slices: pass base "
                "(their token grids, or a function of the actions seen; SliceNavigator.base computes them)."
            )
        current = tokens[:, :steps] if base is None and self.config.residual else base
        return self.predict(self.features(tokens, seen, steps), current)

    def predict(self, features: torch.Tensor, current: torch.Tensor | None = None) -> torch.Tensor:
        """Trunk features (B, S, N, width) -> predicted grids (B, S, out_channels, h, w) of the steps after each.

        Args:
            features: from :meth:`features`.
            current: the base (B, S, d, h, w) a ``residual`` model adds its prediction to (required then): the
                token grids the features were computed from, or, for ``residual_base="warp"``, those of the warped
                current slices (:meth:`SliceNavigator.base <monai_slicenav.networks.SliceNavigator.base>`).
        """
        b, s = features.shape[:2]
        out = self._unpatchify(self.head(features).reshape(b, s, self.config.tokens_per_step, -1), self.out_channels)
        if not self.config.residual:
            return out
        if current is None or current.shape != out.shape:
            raise ValueError(
                f"A residual dynamics model needs the current token grids {tuple(out.shape)} to add its change to, "
                f"got {None if current is None else tuple(current.shape)}."
            )
        return current + out

    def feature_grid(self, features: torch.Tensor, grid: Sequence[int] | None = None) -> torch.Tensor:
        """Trunk features (B, S, N, width) -> (B, S, width, h / patch, w / patch) spatial feature maps of token grids
        of size ``grid`` (default ``grid_size``)."""
        b, s, _, width = features.shape
        gh, gw = (g // self.config.patch for g in (grid or self.config.grid_size))
        return features.reshape(b, s, gh, gw, width).permute(0, 1, 4, 2, 3)

    @property
    def out_channels(self) -> int:
        """Channels of a prediction: the codebook size (``fsq_ce``) or the latent dim (regression)."""
        return self.config.codebook_size if self.config.objective == "fsq_ce" else self.config.latent_dim
