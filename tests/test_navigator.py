"""Stage-2 training model, pose pretexts, context encoder and the static-volume network, checked by value."""

import pytest
import torch

from monai_slicenav.encoders import ContextEncoder, VolumeEncoder, encoders_of
from monai_slicenav.export import export_encoder, load_encoder
from monai_slicenav.geometry import Pose, apply_action, gap_matrix, pose_vector, relative
from monai_slicenav.networks import (
    FSQ,
    MaskedReconstructionLoss,
    NavigationLoss,
    SliceNavigator,
    SliceTokenizer,
    VolumeMAE,
    mask_volumes,
    rollout,
)
from monai_slicenav.transforms import SlicePoseVectorsd

DYNAMICS = {"grid_size": (4, 4), "max_steps": 6, "patch": 2, "width": 32, "depth": 1, "heads": 2}


def random_poses(*shape: int) -> Pose:
    rotation = torch.linalg.qr(torch.randn(*shape, 3, 3))[0]
    rotation = rotation * torch.linalg.det(rotation)[..., None, None]  # proper rotations
    return Pose(torch.randn(*shape, 3) * 20, rotation, torch.rand(*shape) + 0.5)


@pytest.fixture
def navigator() -> SliceNavigator:
    torch.manual_seed(0)
    return SliceNavigator(SliceTokenizer(channels=(8, 16, 16), fsq_levels=(8, 5, 5, 5)), DYNAMICS, True, True)


def test_tokenizer_stays_frozen_while_the_dynamics_learns(navigator):
    frozen = {k: v.clone() for k, v in navigator.tokenizer.state_dict().items()}
    trainable = navigator.trainable_parameters()
    assert trainable and all(not p.requires_grad for p in navigator.tokenizer.parameters())
    assert len(trainable) == len([p for n, p in navigator.named_parameters() if not n.startswith("tokenizer.")])
    optimizer = torch.optim.AdamW(trainable, lr=3e-3)
    slices, actions = torch.rand(4, 6, 1, 32, 32), torch.randn(4, 5, 7)
    targets = {"poses": random_poses(4, 6).as_tensor(), "pose_vectors": torch.randn(4, 6, 10)}
    loss_fn = NavigationLoss("regression", pose_weight=1.0, gap_weight=1.0)
    navigator.train()
    assert not navigator.tokenizer.training  # train() keeps the frozen tokenizer in eval mode
    losses = []
    for _ in range(30):
        loss = loss_fn(navigator(slices, actions), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    for key, value in navigator.tokenizer.state_dict().items():
        assert torch.equal(value, frozen[key]), key


def test_rollout_first_step_is_the_next_step_prediction_and_decodes(navigator):
    navigator.eval()
    slices, actions = torch.rand(2, 5, 1, 32, 32), torch.randn(2, 4, 7)
    imagined = rollout(navigator, slices[:, :1], actions)
    assert imagined.shape == (2, 4, 4, 4, 4)
    with torch.no_grad():
        teacher_forced = navigator(slices[:, :2], actions[:, :1])["predicted_latents"]
        images = navigator.tokenizer.decode(imagined.flatten(0, 1))
    torch.testing.assert_close(imagined[:, :1], teacher_forced)
    assert images.shape == (8, 1, 32, 32) and torch.isfinite(images).all()
    quantizer = navigator.tokenizer.quantizer
    torch.testing.assert_close(quantizer.snap(imagined.flatten(0, 1)), imagined.flatten(0, 1))
    with pytest.raises(ValueError, match="max_steps"):
        rollout(navigator, slices[:, :1], torch.randn(2, 6, 7))


@pytest.mark.parametrize("residual", [False, True])
def test_rollout_step_k_is_the_prediction_from_the_imagined_prefix(residual):
    """Every rollout step k feeds back steps < k: it equals a teacher-forced prediction whose inputs are the true
    context followed by the imagined tokens (and differs from one fed the true slices instead)."""
    torch.manual_seed(0)
    tokenizer = SliceTokenizer(channels=(8, 16, 16), fsq_levels=(8, 5, 5, 5))
    model = SliceNavigator(tokenizer, {**DYNAMICS, "residual": residual}).eval()
    if residual:  # move the zero-initialised head off the copy baseline
        torch.nn.init.normal_(model.dynamics.head.weight, std=0.5)
    slices, actions = torch.rand(2, 5, 1, 32, 32), torch.randn(2, 4, 7)
    imagined = rollout(model, slices[:, :2], actions)  # 2 context slices, 3 imagined steps
    with torch.no_grad():
        tokens = model.tokens(slices)
        fed_back = torch.cat([tokens[:, :2], imagined], dim=1)  # (B, 5, ...)
        for k in range(3):
            step = 2 + k  # the slice being predicted
            prefix = fed_back[:, :step]
            prediction = model.dynamics(torch.cat([prefix, prefix[:, -1:]], dim=1), actions[:, :step])
            torch.testing.assert_close(imagined[:, k], model.latents_of(prediction)[:, -1])
        truth_fed = model.latents_of(model.dynamics(tokens[:, :5], actions))[:, 3]
    assert float((truth_fed - imagined[:, 2]).abs().max()) > 0  # step 2 of the rollout did not see the truth


def test_fsq_snap_rounds_onto_levels():
    fsq = FSQ((8, 5))
    codes = fsq(torch.randn(3, 2, 4, 4) * 3)
    torch.testing.assert_close(fsq.snap(codes), codes)
    torch.testing.assert_close(fsq.snap(codes + 0.05), codes)
    assert fsq.snap(torch.full((1, 2, 1, 1), 9.0)).flatten().tolist() == [0.75, 1.0]  # clamped to the top level


def test_pose_vector_values():
    affine = torch.tensor([[2.0, 0, 0, -10], [0, 1.0, 0, 5], [0, 0, 3.0, 0], [0, 0, 0, 1]])
    shape = (11, 21, 5)  # voxel centres 0..10, 0..20, 0..4
    corner = affine[:3, 3]
    middle = (affine @ torch.tensor([5.0, 10.0, 2.0, 1.0]))[:3]
    poses = Pose(torch.stack([corner, middle]), torch.eye(3).expand(2, 3, 3), torch.tensor([2.0, 4.0]))
    vectors = pose_vector(poses, affine, shape)
    torch.testing.assert_close(vectors[0, :3], torch.tensor([-1.0, -1.0, -1.0]))
    torch.testing.assert_close(vectors[1, :3], torch.zeros(3))
    torch.testing.assert_close(vectors[:, 3:6], torch.tensor([[1.0, 0, 0]] * 2))  # column direction
    torch.testing.assert_close(vectors[:, 6:9], torch.tensor([[0, 0, 1.0]] * 2))  # normal
    torch.testing.assert_close(vectors[:, 9], torch.log(torch.tensor([1.0, 2.0])))  # spacing / mean voxel (2 mm)
    from monai.data import MetaTensor

    d = SlicePoseVectorsd("image")(
        {"image": MetaTensor(torch.zeros(1, *shape), affine=affine), "poses": poses.as_tensor()}
    )
    torch.testing.assert_close(d["pose_vectors"], vectors)


def test_gap_matrix_is_all_pairwise_actions():
    torch.manual_seed(1)
    poses = random_poses(2, 4)
    gaps = gap_matrix(poses)
    assert gaps.shape == (2, 4, 4, 7)
    assert float(gaps.diagonal(dim1=1, dim2=2).abs().max()) < 1e-5
    torch.testing.assert_close(gaps[1, 0, 3], relative(poses[1, 0], poses[1, 3]))
    moved = apply_action(poses[:, 2], gaps[:, 2, 1])
    torch.testing.assert_close(moved.center, poses[:, 1].center, atol=1e-4, rtol=0)


def test_gap_loss_scales_translations():
    loss = NavigationLoss(gap_weight=1.0, gap_scale_mm=10.0)
    poses = Pose(torch.tensor([[[0.0, 0, 0], [10.0, 0, 0]]]), torch.eye(3).expand(1, 2, 3, 3), torch.ones(1, 2))
    output = {"prediction": torch.zeros(1, 1, 2, 2, 2), "target": torch.zeros(1, 1, 2, 2, 2)}
    output["gap"] = torch.zeros(1, 2, 2, 7)
    # gaps: (0 -> 1) moves +1 scaled unit along x, (1 -> 0) -1: mean of squares = 2 / (2 * 2 * 7)
    assert loss(output, {"poses": poses.as_tensor()}).item() == pytest.approx(2 / 28)
    with pytest.raises(ValueError, match="weights"):
        NavigationLoss(pose_weight=-1.0)


def test_context_encoder_is_causal_and_round_trips(navigator, tmp_path):
    encoder = encoders_of(navigator.eval())["context_encoder"].eval()
    assert isinstance(encoder, ContextEncoder) and encoder.out_channels == 4 + 32
    slices, actions = torch.rand(2, 5, 1, 32, 32), torch.randn(2, 4, 7)
    with torch.no_grad():
        full = encoder(slices, actions)
        prefix = encoder(slices[:, :3], actions[:, :2])
        single = encoder(slices[:, 0])
        latents = navigator.tokenizer.encoder(slices[:, 0])
    assert full.shape == (2, 5, 36, 4, 4) and single.shape == (2, 36, 4, 4)
    torch.testing.assert_close(prefix[:, :2], full[:, :2], atol=1e-5, rtol=0)  # later slices never leak back
    torch.testing.assert_close(single[:, :4], latents)  # the tokenizer's latents come first
    with torch.no_grad():  # other slice sizes: the spatial embedding is resized, odd grids padded and cropped
        assert encoder(torch.rand(1, 1, 48, 56)).shape == (1, 36, 6, 7)
    export_encoder(encoder, tmp_path / "context")
    loaded = load_encoder(tmp_path / "context").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(slices, actions), full)


def test_shuffled_context_encoder_uses_the_true_actions():
    tokenizer = SliceTokenizer(channels=(8, 16, 16), fsq_levels=(8, 5, 5, 5))
    navigator = SliceNavigator(tokenizer, {**DYNAMICS, "action_mode": "shuffled"})
    encoder = ContextEncoder.from_navigator(navigator)
    assert encoder.dynamics.config.action_mode == "aligned"


def test_masking_and_masked_loss():
    volumes = torch.rand(2, 1, 16, 16, 32)
    masked, mask = mask_volumes(volumes, ratio=0.5, patch=8, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (2, 1, 16, 16, 32) and mask.mean().item() == 0.5
    assert torch.equal(masked, volumes * (1 - mask))
    cubes = mask[:, :, ::8, ::8, ::8]
    torch.testing.assert_close(mask, cubes.repeat_interleave(8, 2).repeat_interleave(8, 3).repeat_interleave(8, 4))
    loss = MaskedReconstructionLoss(visible_weight=0.0)
    target = torch.cat([volumes, mask], dim=1)
    assert loss(volumes, target).item() == 0.0
    wrong_visible = volumes + (1 - mask)  # errors only where visible: ignored with visible_weight 0
    assert loss(wrong_visible, target).item() == 0.0
    assert MaskedReconstructionLoss(1.0)(wrong_visible, target).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="multiples of 8"):
        mask_volumes(torch.rand(1, 1, 12, 16, 16))


def test_volume_encoder_reads_slices_as_thin_volumes(tmp_path):
    torch.manual_seed(0)
    mae = VolumeMAE(channels=(8, 16))
    encoder = encoders_of(mae)["encoder"].eval()
    assert isinstance(encoder, VolumeEncoder) and encoder.spatial_dims == 3
    volume, slice_ = torch.rand(1, 1, 16, 16, 16), torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(encoder(volume), mae.encoder(volume))
        torch.testing.assert_close(encoder(slice_), mae.encoder(slice_[:, :, None])[:, :, 0])
    export_encoder(encoder, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(tmp_path).eval()(volume), encoder(volume))
    with pytest.raises(ValueError, match="multiples of 4"):
        mae(torch.rand(1, 1, 10, 16, 16))


def test_fsq_cross_entropy_through_the_navigator_learns_the_next_codes():
    """objective fsq_ce: targets are the FSQ indices of the true next tokens, the loss is their cross-entropy, the
    predicted codes are the argmax mapped back onto the levels; a few steps on one batch raise the code accuracy."""
    torch.manual_seed(0)
    tokenizer = SliceTokenizer(channels=(8, 16, 16), fsq_levels=(5, 5, 3))
    model = SliceNavigator(tokenizer, {**DYNAMICS, "objective": "fsq_ce"})
    assert model.dynamics.config.codebook_size == 75
    slices, actions = torch.rand(4, 4, 1, 32, 32), torch.randn(4, 3, 7)
    loss_fn = NavigationLoss("fsq_ce")
    output = model(slices, actions)
    quantizer = tokenizer.quantizer
    torch.testing.assert_close(quantizer.indices_to_codes(output["target"]).movedim(1, 2), output["true_latents"])
    assert output["prediction"].shape == (4, 3, 75, 4, 4)
    expected = torch.nn.functional.cross_entropy(output["prediction"].flatten(0, 1), output["target"].flatten(0, 1))
    torch.testing.assert_close(loss_fn(output, {}), expected)

    def accuracy() -> float:
        with torch.no_grad():
            out = model(slices, actions)
        return float((out["predicted_latents"] == out["true_latents"]).all(dim=2).float().mean())

    before = accuracy()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    for _ in range(40):
        loss = loss_fn(model(slices, actions), {})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert accuracy() > before + 0.2
