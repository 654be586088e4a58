"""Plain-PyTorch two-crop augmentation with the arithmetic of ``kmedssl.views.augment`` (grey-level images).

Per view and sample: random resized crop (10 attempts of area ``U(scale)`` and log-uniform aspect ratio, the
centred whole image as fallback, a continuous box resized by two batched matrix products with the
triangle-kernel weights of ``crop_and_resize``) -> horizontal flip (p 0.5) -> brightness and contrast jitter
(probability ``jitter_probability``), each followed by clipping to [0, 1]. Colour operations (saturation,
hue, grey-scale) act on 3-channel images only in kmedssl and are left out: radiographs have one channel.
Everything runs in float32 with autocast off, as kmedssl's augmentation layers (``autocast=False``).
The random draws come from torch's generator, so the views differ from kmedssl's; the work is the same.

Input: ``images`` ``(B, H, W, C)`` float in [0, 1]. Output: ``(B, size, size, C)`` float32 in [0, 1].
"""

import math

import torch


def interpolation_matrix(start, extent, size, length):
    """``(B,)`` boxes along one axis -> ``(B, size, length)`` resampling weights (kmedssl's
    ``_interpolation_matrix``: triangle kernel of support ``max(1, extent / size)``, rows normalised)."""
    step = extent / size  # (B,)
    index = torch.arange(size, dtype=torch.float32, device=start.device)
    centres = start[:, None] + (index[None, :] + 0.5) * step[:, None] - 0.5  # (B, size)
    support = step.clamp_min(1.0)[:, None, None]
    pixels = torch.arange(length, dtype=torch.float32, device=start.device)
    weights = torch.relu(1.0 - (pixels[None, None, :] - centres[:, :, None]).abs() / support)  # (B, size, length)
    return weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def crop_and_resize(images, boxes, size):
    """``(B, H, W, C)`` images and ``(B, 4)`` boxes ``(top, left, height, width)`` -> ``(B, size, size, C)``:
    ``out_b = R_y,b @ image_b @ R_x,b^T``."""
    rows = interpolation_matrix(boxes[:, 0], boxes[:, 2], size, images.shape[1])  # (B, size, H)
    cols = interpolation_matrix(boxes[:, 1], boxes[:, 3], size, images.shape[2])  # (B, size, W)
    x = torch.einsum("bih,bhwc->biwc", rows, images)  # (B, size, W, C)
    return torch.einsum("bjw,biwc->bijc", cols, x)


def random_boxes(images, scale, ratio, attempts=10):
    """``(B, 4)`` random resized crop boxes, as kmedssl's ``RandomResizedCrop.sample_boxes``."""
    batch, height, width = images.shape[0], float(images.shape[1]), float(images.shape[2])
    device = images.device
    area = height * width * torch.empty(batch, attempts, device=device).uniform_(*scale)
    aspect = torch.exp(torch.empty(batch, attempts, device=device).uniform_(*(math.log(r) for r in ratio)))
    crop_w, crop_h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)  # (B, attempts)
    fits = (crop_w <= width) & (crop_h <= height)
    index = torch.arange(attempts, dtype=torch.float32, device=device)
    first = torch.where(fits, index, float(attempts)).argmin(dim=1, keepdim=True)  # first fitting attempt
    crop_w, crop_h = crop_w.gather(1, first)[:, 0], crop_h.gather(1, first)[:, 0]
    found = fits.any(dim=1)
    image_ratio = width / height
    fallback_w = height * ratio[1] if image_ratio > ratio[1] else width
    fallback_h = width / ratio[0] if image_ratio < ratio[0] else height
    crop_w = torch.where(found, crop_w, torch.full_like(crop_w, fallback_w))
    crop_h = torch.where(found, crop_h, torch.full_like(crop_h, fallback_h))
    placement = torch.where(found[:, None], torch.rand(batch, 2, device=device), 0.5)
    return torch.stack([placement[:, 0] * (height - crop_h), placement[:, 1] * (width - crop_w), crop_h, crop_w], 1)


def uniform_per_sample(x, low, high):
    return torch.empty(x.shape[0], 1, 1, 1, device=x.device).uniform_(low, high)


def augment_view(images, size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), flip=True, jitter_probability=0.8,
                 brightness=0.4, contrast=0.4):
    """One augmented view of ``images`` (see the module docstring)."""
    x = crop_and_resize(images, random_boxes(images, scale, ratio), size).clamp(0.0, 1.0)
    if flip:
        x = torch.where(torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5, x.flip(2), x)
    if jitter_probability > 0:
        jittered = x
        if brightness > 0:
            jittered = (jittered * uniform_per_sample(x, max(0.0, 1 - brightness), 1 + brightness)).clamp(0.0, 1.0)
        if contrast > 0:
            c = uniform_per_sample(x, max(0.0, 1 - contrast), 1 + contrast)
            mean = jittered.mean(dim=(1, 2, 3), keepdim=True)  # grey level of a 1-channel image
            jittered = (c * jittered + (1.0 - c) * mean).clamp(0.0, 1.0)
        x = torch.where(torch.rand(x.shape[0], 1, 1, 1, device=x.device) < jitter_probability, jittered, x)
    return x


def two_views(images, size, **options):
    """Two independent augmented views of ``images`` (kmedssl's ``TwoCropAugmentation``), float32."""
    with torch.autocast(images.device.type, enabled=False):
        images = images.float()
        return augment_view(images, size, **options), augment_view(images, size, **options)
