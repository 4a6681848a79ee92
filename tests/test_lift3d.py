"""Lifting 2D encoders to 3D: exact reassembly, FlexibleUNet backbone registration, weight loading."""

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from scipy.spatial.transform import Rotation

import monai_slicenav  # noqa: F401  (registers the backbone)
from monai_slicenav.downstream.lift3d import DEFAULT_BACKBONE, Lift3D, SliceNavBackbone, register_backbone
from monai_slicenav.encoders import ContextEncoder, SliceEncoder, VolumeEncoder, input_channels
from monai_slicenav.export import export_encoder
from monai_slicenav.geometry import compose_actions, relative
from monai_slicenav.networks import TokenizerConfig, VolumeMAEConfig
from monai_slicenav.volume import voxel_slice_pose

SMALL = TokenizerConfig(channels=(4, 8, 8))


@pytest.fixture
def encoder() -> SliceEncoder:
    torch.manual_seed(0)
    return SliceEncoder(SMALL).eval()


def test_levels_are_slice_pyramids_averaged_through_plane(encoder):
    lift = Lift3D(encoder, axis=2, window=8).eval()
    volume = torch.rand(1, 1, 16, 24, 16)
    levels = lift(volume)
    assert [tuple(f.shape) for f in levels] == [(1, 4, 8, 12, 8), (1, 8, 4, 6, 4), (1, 8, 2, 3, 2)]
    with torch.no_grad():
        slices = volume[0, :, :, :, :].movedim(-1, 0)  # (Z, C, X, Y): slices across axis 2
        pyramid = encoder.pyramid(slices)
    for k, stride in enumerate((2, 4, 8)):
        expected = pyramid[k].reshape(-1, stride, *pyramid[k].shape[1:]).mean(dim=1)  # (Z / s, c, X_k, Y_k)
        torch.testing.assert_close(levels[k][0], expected.permute(1, 2, 3, 0), atol=1e-5, rtol=1e-5)


def test_axis_and_window_do_not_change_the_geometry(encoder):
    volume = torch.rand(1, 1, 16, 8, 24)
    across_x = Lift3D(encoder, axis=0, window=8).eval()(volume)
    across_z = Lift3D(encoder, axis=2, window=16).eval()(volume.permute(0, 1, 3, 4, 2))  # depth X again
    for a, b in zip(across_x, across_z, strict=True):
        torch.testing.assert_close(a, b.permute(0, 1, 4, 2, 3), atol=1e-5, rtol=1e-5)


def test_odd_sides_give_ceil_sized_levels(encoder):
    levels = Lift3D(encoder, window=8).eval()(torch.rand(1, 1, 17, 9, 11))
    assert [tuple(f.shape[2:]) for f in levels] == [(9, 5, 6), (5, 3, 3), (3, 2, 2)]


def test_flexible_unet_trains_a_step_and_infers_on_odd_volumes():
    assert DEFAULT_BACKBONE in FLEXUNET_BACKBONE.register_dict
    torch.manual_seed(0)
    net = FlexibleUNet(1, 3, backbone=DEFAULT_BACKBONE, spatial_dims=3, decoder_channels=(16, 8, 8))
    assert isinstance(net.encoder, SliceNavBackbone) and not net.encoder.frozen
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.rand(1, 1, 16, 16, 16), torch.randint(0, 3, (1, 1, 16, 16, 16))
    loss = torch.nn.functional.cross_entropy(net(x), y[:, 0])
    loss.backward()
    optimizer.step()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("encoder.encoder.") for k in changed)  # finetuned through the checkpointed windows
    assert any(k.startswith("decoder.") for k in changed)
    net.eval()
    with torch.no_grad():
        out = sliding_window_inference(torch.rand(1, 1, 21, 19, 17), (16, 16, 16), 2, net)
        features = sliding_window_inference(torch.rand(1, 1, 21, 19, 17), (16, 16, 16), 2, net.encoder.features)
    assert out.shape == (1, 3, 21, 19, 17) and torch.isfinite(out).all()
    assert features.shape[:2] == (1, 128)


def test_loading_an_export_changes_weights_and_reports_keys(encoder, tmp_path):
    export_encoder(SliceEncoder(TokenizerConfig()), tmp_path / "default")
    backbone = SliceNavBackbone()
    before = backbone.encoder.state_dict()["encoder.stages.0.0.conv.weight"].clone()
    report = backbone.load_encoder_weights(tmp_path / "default")
    after = backbone.encoder.state_dict()["encoder.stages.0.0.conv.weight"]
    assert not torch.equal(before, after) and report["missing"] == report["unexpected"] == []
    assert "encoder.to_latent.conv.weight" in report["loaded"]
    export_encoder(encoder, tmp_path / "small")
    with pytest.raises(ValueError, match="shapes differ"):
        backbone.load_encoder_weights(tmp_path / "small")


def test_registered_export_starts_from_its_weights(encoder, tmp_path):
    export_encoder(encoder, tmp_path / "small")
    name = register_backbone("slicenav-test-small", tmp_path / "small", frozen=True)
    pretrained = FlexibleUNet(1, 2, backbone=name, spatial_dims=3, pretrained=True, decoder_channels=(8, 8, 8))
    scratch = FlexibleUNet(1, 2, backbone=name, spatial_dims=3, decoder_channels=(8, 8, 8))
    key = "encoder.stages.0.0.conv.weight"
    assert torch.equal(pretrained.encoder.encoder.state_dict()[key], encoder.state_dict()[key])
    assert not torch.equal(scratch.encoder.encoder.state_dict()[key], encoder.state_dict()[key])
    assert pretrained.encoder.frozen and not any(p.requires_grad for p in pretrained.encoder.encoder.parameters())


def test_volume_encoders_pass_through_and_bad_arguments(tmp_path):
    export_encoder(VolumeEncoder(VolumeMAEConfig(channels=(4, 8))), tmp_path)
    backbone = SliceNavBackbone(encoder_path=tmp_path, pretrained=True)
    levels = backbone(torch.rand(1, 1, 16, 16, 16))
    assert [tuple(f.shape) for f in levels] == [(1, 4, 8, 8, 8), (1, 8, 4, 4, 4)]
    assert input_channels(SliceNavBackbone(in_channels=2).encoder) == 2  # one channel spread over two
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16, 16), in_channels=2)), tmp_path / "two_channels")
    with pytest.raises(ValueError, match="in_channels"):
        SliceNavBackbone(in_channels=3, encoder_path=tmp_path / "two_channels")
    with pytest.raises(ValueError, match="encoder_path"):
        SliceNavBackbone(pretrained=True)
    with pytest.raises(ValueError, match="window"):
        Lift3D(SliceEncoder(SMALL), window=6)
    with pytest.raises(ValueError, match="volumes"):
        Lift3D(SliceEncoder(SMALL))(torch.rand(1, 16, 16, 16))


def _context_encoder(action_mode: str = "aligned") -> ContextEncoder:
    torch.manual_seed(0)
    dynamics = {"latent_dim": 4, "grid_size": (4, 4), "max_steps": 8, "patch": 2, "width": 16, "depth": 1,
                "heads": 2, "action_mode": action_mode}  # fmt: skip
    return ContextEncoder(TokenizerConfig(channels=(8, 16, 16)), dynamics).eval()


def _oblique_volume(depth: int = 16, sizes: tuple[float, ...] = (1.5, -1.5, 2.5)) -> MetaTensor:
    """A random (1, 1, 32, 32, depth) volume on a rotated, flipped grid of voxel ``sizes`` (mm, sign: flip)."""
    affine = torch.eye(4, dtype=torch.float64)
    rotation = torch.from_numpy(Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix())
    affine[:3, :3] = rotation @ torch.diag(torch.tensor(sizes, dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-30.0, 15.0, 4.0], dtype=torch.float64)
    return MetaTensor(torch.rand(1, 1, 32, 32, depth, generator=torch.Generator().manual_seed(0)), affine=affine)


def _coarse(lift: Lift3D, volume: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return lift.slice_features(volume)[-1]  # (B, c, depth, r, c): per slice, before the depth reduction


@pytest.mark.parametrize("axis, sizes", [(2, (1.5, -1.5, 2.5)), (0, (2.5, 1.5, -1.5))])
def test_the_actions_between_cut_slices_are_relative_poses_of_those_slices(axis, sizes):
    volume = _oblique_volume(sizes=sizes)
    lift = Lift3D(_context_encoder(), axis=axis, context="causal")
    step = lift.slice_action(volume)
    shape = volume.shape[2:]
    for index in (0, 5, shape[axis] - 2):
        poses = [voxel_slice_pose(volume.affine, shape, axis, i, torch.float64)[0] for i in (index, index + 1)]
        torch.testing.assert_close(step, relative(*poses).float())
    assert float(step[:2].abs().max()) < 1e-5 and float(step[3:].abs().max()) < 1e-6  # along the normal only
    assert float(step[2].abs()) == pytest.approx(2.5, abs=1e-5)  # one voxel along the normal, in mm


@pytest.mark.parametrize("context", ["none", "causal", "bidirectional"])
def test_a_slice_sees_the_slices_its_context_mode_gives_it(context):
    volume = _oblique_volume()
    lift = Lift3D(_context_encoder(), window=8, context=context)
    before = _coarse(lift, volume)
    for changed, seen in ((7, 8), (9, 8)):  # the slice before (across a window border) and the slice after
        edited = volume.clone()
        edited[..., changed] = torch.rand(32, 32, generator=torch.Generator().manual_seed(changed))
        moved = not torch.allclose(_coarse(lift, edited)[:, :, seen], before[:, :, seen])
        earlier = changed < seen
        assert moved == (context == "bidirectional" or (context == "causal" and earlier)), (changed, context)
        untouched = [i for i in range(16) if abs(i - changed) > 8]  # beyond any trajectory holding the edit
        torch.testing.assert_close(_coarse(lift, edited)[:, :, untouched], before[:, :, untouched])


def test_a_model_without_actions_ignores_them_and_context_needs_a_trunk():
    encoder = _context_encoder("none")
    stacks = torch.rand(2, 4, 1, 32, 32)
    with torch.no_grad():
        one = encoder.pyramid(stacks, torch.randn(2, 3, 7))
        other = encoder.pyramid(stacks, torch.randn(2, 3, 7))
    assert all(torch.equal(a, b) for a, b in zip(one, other, strict=True))
    with pytest.raises(ValueError, match="needs a context encoder"):
        Lift3D(SliceEncoder(TokenizerConfig(channels=(8, 16, 16))), context="causal")
    with pytest.raises(ValueError, match="context must be one of"):
        Lift3D(encoder, context="sideways")


def test_context_backbones_segment_and_register(tmp_path):
    export_encoder(_context_encoder(), tmp_path / "context_encoder")
    name = register_backbone(
        "slicenav-context-test", tmp_path / "context_encoder", context="bidirectional", context_stride=2
    )
    net = FlexibleUNet(in_channels=1, out_channels=3, backbone=name, pretrained=True, spatial_dims=3,
                       decoder_channels=(16, 8, 8))  # fmt: skip
    assert (net.encoder.context, net.encoder.context_stride) == ("bidirectional", 2)
    assert net(_oblique_volume()).shape == (1, 3, 32, 32, 16)


def test_a_context_stride_makes_trajectories_of_every_kth_slice():
    volume = _oblique_volume()
    lift = Lift3D(_context_encoder(), context="causal", context_stride=2)
    before = _coarse(lift, volume)
    for changed, moves in ((6, True), (7, False)):  # slice 8's trajectory holds slices 0, 2, 4, 6, 8, ...
        edited = volume.clone()
        edited[..., changed] = torch.rand(32, 32, generator=torch.Generator().manual_seed(changed))
        assert (not torch.allclose(_coarse(lift, edited)[:, :, 8], before[:, :, 8])) == moves, changed
    one_step = Lift3D(_context_encoder(), context="causal").slice_action(volume)
    two_steps = compose_actions(one_step, one_step)
    torch.testing.assert_close(two_steps[:3], 2 * one_step[:3])  # a scroll of two voxels
    with pytest.raises(ValueError, match="context_stride"):
        Lift3D(_context_encoder(), context="causal", context_stride=0)


def test_a_single_channel_export_backs_a_four_channel_unet(tmp_path):
    """BraTS-like inputs (T1, T1ce, T2, FLAIR) on weights pretrained on one contrast: the backbone spreads the first
    convolution over the four channels, so four copies of one image give that image's single-channel features."""
    torch.manual_seed(0)
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16, 16))), tmp_path / "encoder")
    name = register_backbone("slicenav-four-channels-test", tmp_path / "encoder")
    net = FlexibleUNet(in_channels=4, out_channels=3, backbone=name, pretrained=True, spatial_dims=3,
                       decoder_channels=(16, 8, 8)).eval()  # fmt: skip
    single = Lift3D(SliceEncoder.from_pretrained(tmp_path / "encoder")).eval()
    x = torch.rand(1, 1, 32, 32, 16)
    with torch.no_grad():
        four = net.encoder.slice_features(x.expand(-1, 4, -1, -1, -1))
        torch.testing.assert_close(four[-1], single.slice_features(x)[-1])
        assert net(x.expand(-1, 4, -1, -1, -1)).shape == (1, 3, 32, 32, 16)
