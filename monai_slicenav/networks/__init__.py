"""Networks: the slice tokenizer (stage 1), its quantizer, the latent dynamics model and its training wrapper
(stage 2), the pose pretext heads, the static-volume baseline, and the multi-positive voxel contrastive loss."""

from .contrastive import (
    PyramidContrastiveLoss,
    TokenizerContrastiveLoss,
    VoxelContrastiveLoss,
    VoxelContrastiveNet,
    sample_voxels_per_label,
    supervised_contrastive,
)
from .conv import ConvDecoderNet, ConvEncoderNet
from .dynamics import DynamicsConfig, LatentDynamics, block_causal_mask
from .navigator import NavigationLoss, SliceNavigator, predict_next, rollout
from .pretext import GapHead, PoseHead
from .quantizer import FSQ
from .tokenizer import SliceDecoderNet, SliceEncoderNet, SliceTokenizer, TokenizerConfig, TokenizerLoss
from .volume_mae import MaskedReconstructionLoss, VolumeMAE, VolumeMAEConfig, mask_volumes

__all__ = [
    "VoxelContrastiveLoss",
    "PyramidContrastiveLoss",
    "TokenizerContrastiveLoss",
    "VoxelContrastiveNet",
    "sample_voxels_per_label",
    "supervised_contrastive",
    "ConvDecoderNet",
    "ConvEncoderNet",
    "DynamicsConfig",
    "LatentDynamics",
    "block_causal_mask",
    "NavigationLoss",
    "SliceNavigator",
    "rollout",
    "predict_next",
    "GapHead",
    "PoseHead",
    "FSQ",
    "SliceDecoderNet",
    "SliceEncoderNet",
    "SliceTokenizer",
    "TokenizerConfig",
    "TokenizerLoss",
    "MaskedReconstructionLoss",
    "VolumeMAE",
    "VolumeMAEConfig",
    "mask_volumes",
]
