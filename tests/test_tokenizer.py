import pytest
import torch

from monai_slicenav.networks import FSQ, SliceTokenizer, TokenizerConfig, TokenizerLoss

TINY = {"channels": (8, 16), "num_res_units": 1, "fsq_levels": (5, 4, 3)}


class TestFSQ:
    def test_codes_indices_round_trip(self):
        fsq = FSQ((8, 5, 5, 5))
        codes = fsq(torch.randn(3, 4, 6, 7) * 3)
        indices = fsq.codes_to_indices(codes)
        assert indices.shape == (3, 6, 7) and indices.dtype == torch.int64
        assert int(indices.min()) >= 0 and int(indices.max()) < fsq.codebook_size == 1000
        assert torch.equal(fsq.indices_to_codes(indices), codes)

    def test_every_index_is_a_distinct_code(self):
        fsq = FSQ((4, 3, 2))
        indices = torch.arange(fsq.codebook_size)[None]  # (1, 24)
        codes = fsq.indices_to_codes(indices)  # (1, 3, 24)
        assert torch.equal(fsq.codes_to_indices(codes), indices)
        assert len({tuple(c) for c in codes[0].T.tolist()}) == 24
        assert float(codes.min()) == -1.0 and float(codes.max()) <= 1.0

    def test_values_on_the_grid_and_straight_through(self):
        fsq = FSQ((5, 4))
        z = torch.randn(2, 2, 8, requires_grad=True)
        codes = fsq(z)
        assert set((codes[:, 0] * 2).round().unique().tolist()) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
        assert set((codes[:, 1] * 2).unique().tolist()) <= {-2.0, -1.0, 0.0, 1.0}
        codes.sum().backward()
        assert float(z.grad.abs().min()) > 0  # rounding passes gradients straight through

    def test_no_persistent_buffers(self):
        assert FSQ((8, 5)).state_dict() == {}

    def test_bad_input(self):
        with pytest.raises(ValueError, match="levels"):
            FSQ((8, 1))
        with pytest.raises(ValueError, match=r"\(B, 2, ...\)"):
            FSQ((8, 5))(torch.zeros(1, 3, 4, 4))


class TestTokenizer:
    def test_shapes_and_token_grid(self):
        tokenizer = SliceTokenizer(**TINY)
        x = torch.rand(2, 1, 32, 48)
        recon, tokens = tokenizer(x), tokenizer.encode(x)
        assert recon.shape == x.shape and tokens.shape == (2, 3, 8, 12)
        assert torch.equal(tokenizer.decode(tokens), recon)
        fsq = tokenizer.quantizer
        assert torch.equal(fsq.indices_to_codes(fsq.codes_to_indices(tokens)), tokens)

    def test_continuous_mode(self):
        tokenizer = SliceTokenizer(TokenizerConfig(channels=(8,), quantizer="none", latent_dim=6))
        x = torch.rand(1, 1, 16, 16)
        recon, tokens = tokenizer(x), tokenizer.encode(x)
        assert tokens.shape == (1, 6, 8, 8) and recon.shape == (1, 1, 16, 16)

    def test_overfitting_reduces_the_loss(self):
        torch.manual_seed(0)
        tokenizer = SliceTokenizer(**TINY)
        loss_fn = TokenizerLoss(ssim_weight=0.2)
        x = torch.zeros(4, 1, 32, 32)
        x[:, :, 8:24, 10:20] = torch.rand(4, 1, 1, 1) * 0.8 + 0.2  # a bright box per slice
        optimizer = torch.optim.Adam(tokenizer.parameters(), lr=3e-3)
        losses = []
        for _ in range(40):
            optimizer.zero_grad()
            loss = loss_fn(tokenizer(x), x)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0]

    @pytest.mark.parametrize(
        "shape, match",
        [((2, 1, 30, 32), "multiples of 4"), ((2, 2, 32, 32), r"\(B, 1, h, w\)"), ((32, 32), "got shape")],
    )
    def test_bad_slices(self, shape, match):
        with pytest.raises(ValueError, match=match):
            SliceTokenizer(**TINY).encode(torch.zeros(shape))

    def test_bad_config(self):
        with pytest.raises(ValueError, match="quantizer"):
            TokenizerConfig(quantizer="vq")
        with pytest.raises(ValueError, match="channels"):
            TokenizerConfig(channels=())
        with pytest.raises(TypeError, match="either"):
            SliceTokenizer(TokenizerConfig(), channels=(8,))

    def test_loss_values(self):
        x = torch.rand(2, 1, 16, 16)
        assert float(TokenizerLoss(ssim_weight=0.0)(x, x)) == 0.0
        assert float(TokenizerLoss("mse", ssim_weight=0.0)(x + 0.5, x)) == pytest.approx(0.25)
        assert float(TokenizerLoss(ssim_weight=1.0)(x, x)) == pytest.approx(0.0, abs=1e-5)
        with pytest.raises(ValueError, match="pixel_loss"):
            TokenizerLoss("huber")
