"""Tissue properties of the phantom, one column per contrast (modality-specific physics).

Columns:
    xr: linear attenuation coefficient mu (1/cm) at ~70 keV effective energy (radiographs, Beer–Lambert).
    ct: Hounsfield units at ~70 keV.
    t1, t2: relative MR signal of T1- and T2-weighted spin-echo images (0 = no signal).
    us_echo: ultrasound backscatter amplitude (speckle brightness; 0 = anechoic).
    us_atten: ultrasound amplitude attenuation (1/cm at ~3.5 MHz).
    us_z: acoustic impedance (MRayl); reflections at interfaces follow ((Z2 - Z1) / (Z2 + Z1))^2.

A mixture (e.g. consolidated lung, calcified cartilage) is a weighted sum of rows, which is exact for mu
and HU (linear in density) and a reasonable model for the other contrasts.
"""

import numpy as np

CONTRASTS = ("xr", "ct", "t1", "t2", "us_echo", "us_atten", "us_z")

#                    xr      ct     t1    t2    echo  atten   z
_TABLE = {
    "air":          (0.000, -1000, 0.00, 0.00, 0.00, 6.00, 0.0004),
    "lung":         (0.046, -840, 0.04, 0.06, 0.10, 3.00, 0.30),
    "fat":          (0.170, -100, 0.95, 0.78, 0.75, 0.12, 1.38),
    "muscle":       (0.196, 45, 0.34, 0.22, 0.22, 0.22, 1.70),
    "blood":        (0.198, 40, 0.10, 0.10, 0.03, 0.04, 1.61),
    "myocardium":   (0.197, 45, 0.38, 0.28, 0.35, 0.22, 1.65),
    "bone":         (0.440, 1150, 0.03, 0.03, 0.90, 4.00, 7.80),
    "marrow":       (0.230, 230, 0.80, 0.55, 0.50, 1.00, 1.70),
    "fluid":        (0.193, 5, 0.10, 0.96, 0.00, 0.01, 1.52),
    "liver":        (0.200, 60, 0.58, 0.28, 0.45, 0.20, 1.65),
    "spleen":       (0.199, 48, 0.42, 0.55, 0.48, 0.20, 1.66),
    "kidney":       (0.198, 32, 0.45, 0.60, 0.20, 0.20, 1.63),
    "bowel":        (0.195, 25, 0.35, 0.45, 0.60, 0.30, 1.60),
    "cartilage":    (0.206, 110, 0.45, 0.50, 0.05, 0.30, 1.85),
    "ligament":     (0.204, 80, 0.06, 0.05, 0.60, 0.40, 1.75),
    "grey_matter":  (0.197, 38, 0.48, 0.58, 0.35, 0.20, 1.60),
    "white_matter": (0.195, 27, 0.68, 0.40, 0.40, 0.20, 1.61),
    "csf":          (0.193, 6, 0.07, 1.00, 0.00, 0.01, 1.52),
    "lesion":       (0.200, 32, 0.30, 0.80, 0.72, 0.25, 1.68),
    "calcium":      (0.360, 500, 0.05, 0.04, 1.00, 5.00, 6.00),
}

TISSUES = tuple(_TABLE)
_INDEX = {name: i for i, name in enumerate(TISSUES)}
TABLE = np.array([_TABLE[name] for name in TISSUES], dtype=np.float64)  # (n_tissues, n_contrasts)


def weights(spec):
    """Mixture weights over TISSUES: ``spec`` is a tissue name or a dict {name: fraction}."""
    out = np.zeros(len(TISSUES))
    for name, frac in ({spec: 1.0} if isinstance(spec, str) else spec).items():
        if name not in _INDEX:
            raise ValueError(f"Expected a tissue in {TISSUES}. Received: {name!r}")
        out[_INDEX[name]] += frac
    return out


def column(contrast):
    """The (n_tissues,) property column of one contrast."""
    if contrast not in CONTRASTS:
        raise ValueError(f"Expected a contrast in {CONTRASTS}. Received: contrast={contrast!r}")
    return TABLE[:, CONTRASTS.index(contrast)]
