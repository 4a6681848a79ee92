"""Small trained stage-2 models for the tests: trajectories of the dynamics bundle's own regime on synthetic
volumes, a dynamics model trained on them until it uses its actions, and a stage folder as the bundle writes it."""

from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from monai_slicenav.data import embedded_datalist
from monai_slicenav.encoders import encoders_of, export_encoder
from monai_slicenav.experiments.pretrain import train_configs
from monai_slicenav.geometry import Pose, as_slice_size
from monai_slicenav.networks import SliceNavigator, SliceTokenizer
from monai_slicenav.transforms import EmbeddedVolumed, RandSliceTrajectoryd, RenderSlicesd

SYNTH_SIZE = 48


def bundle_regime(slice_size: int = 32, num_steps: int = 3) -> tuple[dict, dict, float]:
    """The dynamics bundle's navigation regime, dynamics settings and learning rate, read from its configs."""
    parser = ConfigParser()
    parser.read_config(train_configs("slicenav_dynamics"))
    parser.update({"slice_size": slice_size, "num_steps": num_steps, "channels": [8, 16]})
    fields = ("conditioning", "residual", "residual_base", "action_scale", "grid_size", "max_steps")
    dynamics = {k: parser.get_parsed_content(f"dynamics_config#{k}") for k in fields}
    return parser.get_parsed_content("navigation_regime"), dynamics, parser.get_parsed_content("learning_rate")


def rendered_trajectories(regime: dict, volumes: int, seed: int, per_volume: int) -> dict[str, torch.Tensor]:
    """Trajectories of ``regime`` on small synthetic volumes, stacked: image (N, T, 1, h, w), actions, poses."""
    render = Compose(
        [
            EmbeddedVolumed(synth_options={"spatial_size": SYNTH_SIZE}),
            RandSliceTrajectoryd("label", num_samples=per_volume, **regime),
            RenderSlicesd("image", spatial_size=regime["spatial_size"]),
        ]
    ).set_random_state(seed)
    samples = [s for item in embedded_datalist(volumes, seed, include_packaged=False) for s in render(item)]
    return {
        key: torch.stack([torch.as_tensor(s[key]).float() for s in samples]) for key in ("image", "actions", "poses")
    }


def train_dynamics(navigator: SliceNavigator, trajectories: dict, steps: int, learning_rate: float) -> None:
    """Next-step latent regression on the trajectories' cached tokens (and residual bases: the warped current slices
    for a warp-base model), batches of 32 (seeded), with the true actions."""
    tokens, actions = navigator.tokens(trajectories["image"]), trajectories["actions"]
    spacing = Pose.from_tensor(trajectories["poses"][:, :-1]).spacing
    with torch.no_grad():
        base = navigator.base(tokens[:, :-1], actions, trajectories["image"][:, :-1], spacing)
    optimizer = torch.optim.AdamW(navigator.trainable_parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(0)
    dynamics = navigator.dynamics
    for _ in range(steps):
        batch = torch.randint(len(tokens), (32,), generator=generator)
        loss = torch.nn.functional.mse_loss(dynamics(tokens[batch], actions[batch], base[batch]), tokens[batch, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def train_tokenizer(tokenizer: SliceTokenizer, slices: torch.Tensor, steps: int) -> None:
    """L1 reconstruction of the slices (N, 1, h, w), batches of 64 (seeded), so decoded predictions look like MRI."""
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = slices[torch.randint(len(slices), (64,), generator=generator)]
        loss = (tokenizer(batch) - batch).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokenizer.eval()


def trained_stage(root: Path, tokenizer_steps: int = 200, dynamics_steps: int = 300) -> Path:
    """A dynamics stage folder as the bundle writes it (``models/model.pt``, ``models/encoder``,
    ``models/context_encoder`` with the regime recorded) of a small model that uses its actions."""
    regime, dynamics, learning_rate = bundle_regime()
    train = rendered_trajectories(regime, 4, 0, 64)
    torch.manual_seed(0)
    tokenizer = SliceTokenizer(channels=(8, 16))
    train_tokenizer(tokenizer, train["image"].flatten(0, 1), tokenizer_steps)
    navigator = SliceNavigator(tokenizer, {**dynamics, "width": 32, "depth": 1, "heads": 2})
    train_dynamics(navigator, train, dynamics_steps, learning_rate)
    navigator.eval()
    models = root / "models"
    spec = {"normalisation": "intensities in [0, 1]", "slice_size": list(as_slice_size(regime["spatial_size"]))}
    for name, encoder in encoders_of(navigator).items():
        export_encoder(encoder, models / name, spec, {"bundle": "tests"}, regime)
    torch.save(navigator.state_dict(), models / "model.pt")
    return root
