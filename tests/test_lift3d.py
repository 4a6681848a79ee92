"""Lifting 2D encoders to 3D: exact reassembly, FlexibleUNet backbone registration, weight loading."""

import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

import monai_slicenav  # noqa: F401  (registers the backbone)
from monai_slicenav.downstream.lift3d import DEFAULT_BACKBONE, Lift3D, SliceNavBackbone, register_backbone
from monai_slicenav.encoders import SliceEncoder, VolumeEncoder
from monai_slicenav.export import export_encoder
from monai_slicenav.networks import TokenizerConfig, VolumeMAEConfig

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
    with pytest.raises(ValueError, match="in_channels"):
        SliceNavBackbone(in_channels=2)
    with pytest.raises(ValueError, match="encoder_path"):
        SliceNavBackbone(pretrained=True)
    with pytest.raises(ValueError, match="window"):
        Lift3D(SliceEncoder(SMALL), window=6)
    with pytest.raises(ValueError, match="volumes"):
        Lift3D(SliceEncoder(SMALL))(torch.rand(1, 16, 16, 16))
