import pytest
import torch

from monai_slicenav.networks import LatentDynamics, NavigationLoss, block_causal_mask
from monai_slicenav.networks.dynamics import DynamicsConfig

SMALL = {"latent_dim": 2, "grid_size": (4, 4), "max_steps": 6, "patch": 2, "width": 32, "depth": 2, "heads": 2}


def test_block_causal_mask():
    mask = block_causal_mask(3, 2)
    expected_allowed = torch.tensor(
        [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0], [1] * 6, [1] * 6],
        dtype=torch.bool,
    )
    assert torch.equal(~mask, expected_allowed)


@pytest.mark.parametrize("conditioning", ["add", "token"])
def test_predictions_never_see_the_future(conditioning):
    torch.manual_seed(0)
    model = LatentDynamics(**SMALL, conditioning=conditioning).eval()
    tokens, actions = torch.randn(2, 6, 2, 4, 4), torch.randn(2, 5, 7)
    changed_tokens, changed_actions = tokens.clone(), actions.clone()
    changed_tokens[:, 3] += 1.0  # step 3 and the action leaving it
    changed_actions[:, 3] += 1.0
    with torch.no_grad():
        reference, changed = model(tokens, actions), model(changed_tokens, changed_actions)
    torch.testing.assert_close(changed[:, :3], reference[:, :3], atol=1e-6, rtol=0)  # predictions of steps 1..3
    assert float((changed[:, 3:] - reference[:, 3:]).abs().max()) > 1e-3


@pytest.mark.parametrize("conditioning", ["add", "token"])
def test_tokens_of_a_step_attend_each_other(conditioning):
    """Block-causal, not token-causal: changing the last patch of step 2 changes the prediction made at step 2 for
    its first patch, which comes earlier in the sequence (a token-causal mask would hide it)."""
    torch.manual_seed(0)
    model = LatentDynamics(**SMALL, conditioning=conditioning).eval()
    tokens, actions = torch.randn(1, 6, 2, 4, 4), torch.randn(1, 5, 7)
    changed = tokens.clone()
    changed[:, 2, :, 2:, 2:] += 1.0  # the last patch of step 2
    with torch.no_grad():
        before, after = model(tokens, actions), model(changed, actions)
    difference = (after[:, 2] - before[:, 2]).abs()  # predictions made at step 2, per position
    assert float(difference[..., :2, :2].max()) > 1e-4  # the first patch of step 2 saw the last
    torch.testing.assert_close(after[:, :2], before[:, :2], atol=1e-6, rtol=0)  # earlier steps did not


def test_action_modes():
    torch.manual_seed(0)
    tokens, actions = torch.randn(4, 5, 2, 4, 4), torch.randn(4, 4, 7)
    none = LatentDynamics(**SMALL, action_mode="none").eval()
    assert none.condition(actions) is None
    torch.testing.assert_close(none(tokens, actions), none(tokens, torch.randn(4, 4, 7)))
    aligned = LatentDynamics(**SMALL).eval()
    assert not torch.allclose(aligned(tokens, actions), aligned(tokens, torch.randn(4, 4, 7)))
    shuffled = LatentDynamics(**SMALL, action_mode="shuffled")
    seen = shuffled.condition(actions)
    assert not torch.equal(seen, actions)
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, actions.tolist()))  # a permutation of the rows
    assert shuffled.eval().condition(actions) is actions  # evaluations feed every model the same inputs


def test_residual_model_starts_as_the_copy_baseline_and_token_conditioning_reads_actions():
    torch.manual_seed(0)
    tokens, actions = torch.randn(2, 5, 2, 4, 4), torch.randn(2, 4, 7)
    residual = LatentDynamics(**SMALL, residual=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(residual(tokens, actions), tokens[:, :4])  # z_t+1 = z_t before training
    token = LatentDynamics(**SMALL, conditioning="token").eval()
    with torch.no_grad():
        prediction = token(tokens, actions)
        assert prediction.shape == (2, 4, 2, 4, 4)  # the action tokens are not predictions
        changed = token(tokens, actions * 2)
    assert float((prediction - changed).abs().max()) > 1e-4


def test_action_scale_normalises_the_actions():
    torch.manual_seed(0)
    tokens, actions = torch.randn(2, 5, 2, 4, 4), torch.randn(2, 4, 7)
    scale = (10.0, 10.0, 10.0, 0.5, 0.5, 0.5, 0.1)
    scaled = LatentDynamics(**SMALL, action_scale=scale).eval()
    plain = LatentDynamics(**SMALL).eval()
    plain.load_state_dict(scaled.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(scaled(tokens, actions * torch.tensor(scale)), plain(tokens, actions))
    with pytest.raises(ValueError, match="action_scale"):
        DynamicsConfig(action_scale=(1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="residual"):
        DynamicsConfig(residual=True, objective="fsq_ce", codebook_size=8)


def drifting_world(batch: int, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Token grids that move with the action: step t + 1 is step t plus actions[:, t, 0] (in {-1, 0, 1}) in every
    latent, so only a model that reads the right action predicts the next step."""
    grid = torch.randn(batch, 1, 2, 4, 4, generator=generator)
    moves = torch.randint(-1, 2, (batch, steps - 1), generator=generator).float()
    offsets = torch.cat([torch.zeros(batch, 1), moves.cumsum(dim=1)], dim=1)  # (B, T)
    actions = torch.zeros(batch, steps - 1, 7)
    actions[..., 0] = moves
    return grid + offsets[:, :, None, None, None], actions


def test_true_actions_beat_shuffled_ones_after_training():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = LatentDynamics(**SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        tokens, actions = drifting_world(16, 4, generator)
        optimizer.zero_grad()
        loss = next_step_error(model, tokens, actions)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10  # the latent prediction loss falls
    model.eval()
    tokens, actions = drifting_world(64, 4, torch.Generator().manual_seed(99))  # held-out trajectories
    with torch.no_grad():
        true_error = next_step_error(model, tokens, actions).item()
        shuffled_error = next_step_error(model, tokens, actions[torch.randperm(64)]).item()
    assert true_error < 0.5 * shuffled_error


def test_fsq_cross_entropy_objective():
    model = LatentDynamics(**SMALL, objective="fsq_ce", codebook_size=10)
    tokens, actions = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 2, 7)
    logits = model(tokens, actions)
    assert logits.shape == (2, 2, 10, 4, 4)
    indices = torch.randint(0, 10, (2, 2, 4, 4))
    loss = NavigationLoss("fsq_ce")({"prediction": logits, "target": indices}, {})
    expected = torch.nn.functional.cross_entropy(logits.permute(0, 1, 3, 4, 2).reshape(-1, 10), indices.flatten())
    torch.testing.assert_close(loss, expected)


def test_a_warp_base_model_takes_its_base_from_the_actions_it_sees():
    """One forward for every config: a warp-base model is given its base (or a function of the actions it sees,
    drawn once, so a shuffled model's base follows its shuffled actions) and refuses to guess one."""
    torch.manual_seed(0)
    model = LatentDynamics(**SMALL, residual=True, residual_base="warp", action_mode="shuffled").train()
    torch.nn.init.normal_(model.head.weight)
    tokens, actions = torch.randn(4, 3, 2, 4, 4), torch.randn(4, 2, 7)
    with pytest.raises(ValueError, match="residual_base='warp'"):
        model(tokens, actions)
    seen_by_base = []
    torch.manual_seed(1)
    out = model(tokens, actions, base=lambda seen: seen_by_base.append(seen) or tokens[:, :2] * 0)
    assert not torch.equal(seen_by_base[0], actions)  # the shuffled actions, as the trunk saw them
    torch.manual_seed(1)
    torch.testing.assert_close(out, model(tokens, actions, base=tokens[:, :2] * 0))


def next_step_error(model: LatentDynamics, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """MSE of the predicted against the true latents of steps 1 .. T - 1 (what NavigationLoss takes on latents)."""
    return torch.nn.functional.mse_loss(model(tokens, actions), tokens[:, 1:])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"action_mode": "random"}, "action_mode"),
        ({"objective": "fsq_ce"}, "codebook_size"),
        ({"grid_size": (5, 4)}, "divisible"),
        ({"width": 30, "heads": 4}, "width"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DynamicsConfig(**{**SMALL, **kwargs})


def test_bad_shapes():
    model = LatentDynamics(**SMALL)
    with pytest.raises(ValueError, match="tokens must be"):
        model(torch.randn(2, 3, 3, 4, 4), torch.randn(2, 2, 7))
    with pytest.raises(ValueError, match="actions"):
        model(torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 7))


def test_shuffled_actions_never_stay_with_their_trajectory():
    model = LatentDynamics(**SMALL, action_mode="shuffled")
    for batch in (2, 3, 7):
        actions = torch.arange(batch, dtype=torch.float32)[:, None, None].expand(batch, 4, 7)
        for _ in range(5):
            seen = model.condition(actions)[:, 0, 0]
            assert sorted(seen.tolist()) == list(range(batch))  # a permutation of the batch
            assert not torch.any(seen == torch.arange(batch))  # with no fixed point
