"""Plain-PyTorch S-PCL and MVMAE: masking, encoders and losses of SPEC §3.1 and §3.4 in one ``forward``."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .vit import patchify


def tsp_infonce(z_1, z_2, kappa, scale):
    """S-PCL's T-SP InfoNCE (paper 003 Eq. 2): anchors the 2B rows of ``[z_1; z_2]``, positive ``(i + B) mod
    2B``, logits ``scale * 0.5 (1 + c) / (1 + (1 - c) kappa)`` with ``c`` the cosine, all ``j != i`` in the
    denominator."""
    z = F.normalize(torch.cat([z_1, z_2]).float(), dim=-1, eps=1e-12)  # (2B, D)
    cosine = z @ z.T
    logits = scale * 0.5 * (1.0 + cosine) / (1.0 + (1.0 - cosine) * kappa)  # (2B, 2B)
    rows = z.shape[0]
    logits = logits.masked_fill(torch.eye(rows, dtype=torch.bool, device=z.device), float("-inf"))
    targets = (torch.arange(rows, device=z.device) + rows // 2) % rows
    return F.cross_entropy(logits, targets)


class SPCL(nn.Module):
    """One image -> mask ``mask_ratio`` of the patches -> two disjoint visible parts (sorted indices) ->
    shared ViT on each part -> T-SP InfoNCE between the two CLS tokens, with a trainable log scale clamped
    to [1, 100]."""

    def __init__(self, encoder, mask_ratio=0.6, kappa=16.0, scale_init=1 / 0.07):
        super().__init__()
        self.encoder = encoder
        self.mask_ratio, self.kappa = mask_ratio, kappa
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale_init)))

    def forward(self, image):
        batch, num = image.shape[0], self.encoder.num_patches
        ids = torch.argsort(torch.rand(batch, num, device=image.device), dim=-1)
        masked = int(num * self.mask_ratio)
        split = masked + (num - masked) // 2
        part_1 = torch.sort(ids[:, masked:split], dim=-1).values
        part_2 = torch.sort(ids[:, split:], dim=-1).values
        z_1 = self.encoder(image, part_1)[:, 0]
        z_2 = self.encoder(image, part_2)[:, 0]
        return tsp_infonce(z_1, z_2, self.kappa, self.log_scale.exp().clamp(1.0, 100.0))


class MVMAE(nn.Module):
    """Frontal + lateral images, one MAE mask shared by both views -> encoder on the kept patches ->
    decoder -> ``0.5 (rec_f + rec_l) + beta * align`` with the token alignment of paper 000 Eq. 1."""

    def __init__(self, encoder, decoder, mask_ratio=0.75, beta=1.0):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.mask_ratio, self.beta = mask_ratio, beta

    def reconstruction(self, images, pred, mask):
        """MAE loss: per-patch mean squared error, averaged over the removed patches of the batch."""
        error = (pred - patchify(images, self.encoder.patch_size)).square().mean(dim=-1)  # (B, N)
        return (error * mask).sum() / mask.sum().clamp_min(1e-12)

    def forward(self, frontal, lateral):
        batch, num = frontal.shape[0], self.encoder.num_patches
        ids_shuffle = torch.argsort(torch.rand(batch, num, device=frontal.device), dim=-1)
        ids_restore = torch.argsort(ids_shuffle, dim=-1)
        kept = int(num * (1 - self.mask_ratio))
        ids_keep = ids_shuffle[:, :kept]
        mask = (ids_restore >= kept).float()  # 1 = removed
        tokens_f = self.encoder(frontal, ids_keep)
        tokens_l = self.encoder(lateral, ids_keep)
        rec_f = self.reconstruction(frontal, self.decoder(tokens_f, ids_restore), mask)
        rec_l = self.reconstruction(lateral, self.decoder(tokens_l, ids_restore), mask)
        align = (tokens_f - tokens_l).square().mean(dim=-1).sum(dim=-1).mean()
        return 0.5 * (rec_f + rec_l) + self.beta * align
