"""Float64 NumPy oracles of the losses and masking ops, written from SPEC §3 and the papers' equations.

Deliberately naive (explicit loops, the papers' own exp/log forms) and independent of kmedssl.
"""

import math

import numpy as np


def normalize(x):
    """n(x) = x / max(||x||, 1e-12) along the last axis."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _log_sum_exp(values):
    values = np.asarray(values, dtype=np.float64)
    peak = values.max()
    return peak + math.log(np.exp(values - peak).sum())


# === MVMAE (paper 000) ===


def mae_reconstruction(target, pred, mask, norm_pix=False):
    target, pred, mask = (np.asarray(a, dtype=np.float64) for a in (target, pred, mask))
    batch, length, pixels = target.shape
    numerator, denominator = 0.0, 0.0
    for b in range(batch):
        for l in range(length):
            t = target[b, l]
            if norm_pix:
                mean = t.sum() / pixels
                variance = ((t - mean) ** 2).sum() / (pixels - 1)
                t = (t - mean) / math.sqrt(variance + 1e-6)
            error = ((pred[b, l] - t) ** 2).sum() / pixels
            numerator += error * mask[b, l]
            denominator += mask[b, l]
    return numerator / denominator if denominator > 0 else 0.0


def latent_alignment(tokens_f, tokens_l, mode="tokens"):
    f, l = np.asarray(tokens_f, dtype=np.float64), np.asarray(tokens_l, dtype=np.float64)
    batch, tokens, dim = f.shape
    total = 0.0
    for b in range(batch):
        if mode == "tokens":
            total += sum(((f[b, t] - l[b, t]) ** 2).sum() / dim for t in range(tokens))
        else:
            a, c = normalize(f[b].sum(axis=0) / tokens), normalize(l[b].sum(axis=0) / tokens)
            total += 0.5 * ((a - c) ** 2).sum() / dim
    return total / batch


# === Multi-view InfoNCE (paper 000, Eq. 2) and NT-Xent ===


def multiview_infonce(z_f, z_l, temperature=0.1, exclude_positive=True):
    """-1/(2N) sum_v sum_i log(Lambda(v_i, vbar_i) / sum_{k != i} [Lambda(v_i, v_k) + Lambda(v_i, vbar_k)])."""
    views = [normalize(z_f), normalize(z_l)]
    n = views[0].shape[0]

    def lam(u, w):
        return math.exp(float(u @ w) / temperature)

    total = 0.0
    for v in range(2):
        z_v, z_vbar = views[v], views[1 - v]
        for i in range(n):
            positive = lam(z_v[i], z_vbar[i])
            denominator = sum(lam(z_v[i], z_v[k]) + lam(z_v[i], z_vbar[k]) for k in range(n) if k != i)
            if not exclude_positive:
                denominator += positive
            total += math.log(positive / denominator)
    return -total / (2 * n)


def nt_xent(z_a, z_b, temperature=0.1):
    z = np.concatenate([normalize(z_a), normalize(z_b)])
    rows, batch = z.shape[0], z.shape[0] // 2
    total = 0.0
    for i in range(rows):
        logits = [float(z[i] @ z[j]) / temperature for j in range(rows) if j != i]
        total += _log_sum_exp(logits) - float(z[i] @ z[(i + batch) % rows]) / temperature
    return total / rows


# === Jaccard-weighted SupCon (paper 001, Eq. 3) ===


def jaccard(y_a, y_p):
    active_a = {m for m, bit in enumerate(y_a) if bit}
    active_p = {m for m, bit in enumerate(y_p) if bit}
    union = active_a | active_p
    return len(active_a & active_p) / len(union) if union else 0.0


def jaccard_supcon(features, labels, temperature=0.07, threshold=0.3, base_temperature=0.07):
    features = np.asarray(features, dtype=np.float64)
    batch, views, _ = features.shape
    z = [normalize(features[b, v]) for v in range(views) for b in range(batch)]  # view-major
    y = [labels[b] for v in range(views) for b in range(batch)]
    rows = len(z)
    total = 0.0
    for a in range(rows):
        others = [k for k in range(rows) if k != a]
        log_denominator = _log_sum_exp([float(z[a] @ z[k]) / temperature for k in others])
        positives = [p for p in others if jaccard(y[a], y[p]) >= threshold]
        if not positives:
            continue
        weighted = sum(jaccard(y[a], y[p]) * (float(z[a] @ z[p]) / temperature - log_denominator) for p in positives)
        total += -(temperature / base_temperature) * weighted / len(positives)
    return total / rows


# === S-PCL (paper 003, Eqs. 1-2) ===


def tsp_similarity(a, b, kappa):
    a, b = normalize(a), normalize(b)
    out = np.zeros((a.shape[0], b.shape[0]))
    for m in range(a.shape[0]):
        for k in range(b.shape[0]):
            c = float(a[m] @ b[k])
            out[m, k] = 0.5 * (1 + c) / (1 + (1 - c) * kappa)
    return out


def tsp_infonce(z_1, z_2, kappa=16.0, scale=1 / 0.07):
    z = np.concatenate([np.asarray(z_1, dtype=np.float64), np.asarray(z_2, dtype=np.float64)])
    rows, batch = z.shape[0], z.shape[0] // 2
    similarity = tsp_similarity(z, z, kappa)
    total = 0.0
    for i in range(rows):
        numerator = math.exp(scale * similarity[i, (i + batch) % rows])
        denominator = sum(math.exp(scale * similarity[i, j]) for j in range(rows) if j != i)
        total += -math.log(numerator / denominator)
    return total / rows


# === Masking (SPEC §3.1, §3.4) ===


def random_partition(noise, mask_ratio):
    noise = np.asarray(noise)
    n_mask = int(noise.shape[1] * mask_ratio)
    masked, part_1, part_2 = [], [], []
    for row in noise:
        ids = list(np.argsort(row, kind="stable"))
        visible = ids[n_mask:]
        masked.append(sorted(ids[:n_mask]))
        part_1.append(sorted(visible[: len(visible) // 2]))
        part_2.append(sorted(visible[len(visible) // 2 :]))
    return tuple(np.array(p, dtype=np.int64).reshape(noise.shape[0], -1) for p in (masked, part_1, part_2))


def mae_masking(noise, mask_ratio):
    noise = np.asarray(noise)
    batch, tokens = noise.shape
    len_keep = int(tokens * (1 - mask_ratio))
    ids_keep = np.zeros((batch, len_keep), dtype=np.int64)
    mask = np.ones((batch, tokens))
    ids_restore = np.zeros((batch, tokens), dtype=np.int64)
    for b in range(batch):
        order = list(np.argsort(noise[b], kind="stable"))
        ids_keep[b] = order[:len_keep]
        mask[b, order[:len_keep]] = 0.0
        for position, token in enumerate(order):
            ids_restore[b, token] = position
    return ids_keep, mask, ids_restore


# === ACE matching (SPEC §3.5; paper 004, Eqs. 4, 5, 7) ===


def ace_pair_targets(paired, side, kernel, sigma):
    """Eq. 4 from pairs: ``(B, N_t) -> (B, N_t, side^2)``, a kernel x kernel Gaussian of peak 1 on each paired
    cell of the side x side grid (clipped at the border); rows paired with -1 are zero."""
    paired = np.asarray(paired)
    target = np.zeros((*paired.shape, side * side))
    for b, i in np.ndindex(*paired.shape):
        if paired[b, i] < 0:
            continue
        cy, cx = divmod(int(paired[b, i]), side)
        for y in range(side):
            for x in range(side):
                if max(abs(y - cy), abs(x - cx)) <= (kernel - 1) // 2:
                    target[b, i, y * side + x] = math.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    return target


def ace_matching_loss(logits, target, alpha):
    """Mean of (alpha T + (1 - alpha)(1 - T)) * BCE(logits, T), with BCE = -T log s(x) - (1 - T) log(1 - s(x))
    written as log(1 + e^x) - T x (the same number, finite for large |x|)."""
    logits, target = np.asarray(logits, np.float64), np.asarray(target, np.float64)
    bce = np.logaddexp(0.0, logits) - target * logits
    return float(np.mean((alpha * target + (1 - alpha) * (1 - target)) * bce))


def ace_loss_from_pairs(teacher, student, log_scale, paired, grid, kernel, sigma, alpha):
    """The matching loss of logits exp(log_scale) n(teacher) student^T against the targets of ``paired``."""
    logits = math.exp(float(log_scale)) * normalize(teacher) @ np.asarray(student, np.float64).transpose(0, 2, 1)
    return ace_matching_loss(logits, ace_pair_targets(paired, grid, kernel, sigma), alpha)
