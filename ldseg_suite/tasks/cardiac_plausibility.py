"""Anatomical plausibility of short-axis slices (real, reconstructed or generated), by the classical segmentation.

Two checks, both on ``segment_by_intensity`` of one slice (images (n, H, W, 1) in [-1, 1]):

- ``plausibility`` (strict, issue 23's wording): an LV pool, a myocardium ring and an RV of plausible sizes. Only
  mid-ventricular and basal slices can pass it; real held-out slices pass at about 51 %, so a faithful sampler of
  the whole short-axis stack scores about that too.
- ``calibrated_plausibility``: a slice passes when it matches one of the slice *types* that the training phantoms'
  slices show (``TYPES``: by which structures the segmentation finds) and every feature (``FEATURES``: areas,
  ring, RV contact, stray blood-bright pixels, the body's air / lung / tissue intensities and its edge sharpness)
  lies inside that type's range over the training slices (``calibrate``). Types seen on fewer than ``MIN_SHARE``
  of the training slices are not admitted. A slice without a heart passes only with a body of plausible
  intensities, air at the border, no dark hole in the middle and sharp edges, so blank, noise, blurred and
  patch-shuffled images fail (``tests/test_mgdcr.py``, docs/cardiac.md). ``type_distribution`` compares the
  samples' type shares with the real slices' (total-variation distance and a chi-square test), so a sampler that
  emits only the easy types does not look good.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

# Strict check: plausible areas (mm^2) on slices that show all three structures, the 0.5-99.5 % range of the
# training phantoms' true labels (48 phantoms, 32 px), rounded outwards; resolution-independent.
AREA_MM2 = {"lv": (150.0, 2000.0), "myo": (300.0, 2200.0), "rv": (50.0, 1500.0)}
RING = 0.7  # share of the LV pool's outer rim that must be myocardium

BLOOD, DARK = 0.7, 0.12  # blood-bright pixels; air and lung (the body's tissue is >= 0.05 before noise, mostly > 0.2)
TYPES = {"lv+myo+rv": "LV pool, myocardium and RV (mid-ventricular, basal)",
         "lv+myo": "LV pool and myocardium, no RV (apical)",
         "no pool": "no blood pool of >= 20 pixels (apical cap, below the heart)"}
FEATURES = ("lv_mm2", "myo_mm2", "rv_mm2", "ring", "rv_touches_myo", "stray_bright_mm2", "dark_border",
            "dark_centre", "tissue_median", "tissue_p90", "edge_p99")
MIN_SHARE = 0.01  # a type must occur on at least 1 % of the training slices to be admitted


def _segment(image01: np.ndarray, pixel_mm: float) -> np.ndarray:
    import warnings

    from ldseg_suite.data.cardiac import segment_by_intensity

    with warnings.catch_warnings():  # a pool that fills the image has an empty rim (its darkness is NaN: not LV)
        warnings.simplefilter("ignore", RuntimeWarning)
        return segment_by_intensity(image01[..., None], spacing=(pixel_mm, pixel_mm, 7.0))[..., 0]


def features(images, pixel_mm: float) -> pd.DataFrame:
    """One row of ``FEATURES`` (and the slice ``type``, None if it is no type of ``TYPES``) per slice."""
    rows = []
    for image in np.asarray(images, np.float32):
        u = (np.clip(image[..., 0], -1, 1) + 1.0) / 2.0
        seg = _segment(u, pixel_mm)
        masks = {name: seg == k for k, name in ((1, "lv"), (2, "myo"), (3, "rv"))}
        row = {f"{name}_mm2": float(m.sum()) * pixel_mm ** 2 for name, m in masks.items()}
        rim = ndimage.binary_dilation(masks["lv"]) & ~masks["lv"]
        row["ring"] = float(masks["myo"][rim].mean()) if rim.any() else 0.0
        row["rv_touches_myo"] = float((ndimage.binary_dilation(masks["rv"], iterations=2) & masks["myo"]).any())
        row["stray_bright_mm2"] = float(((u > BLOOD) & (seg != 1) & (seg != 3)).sum()) * pixel_mm ** 2
        border = np.ones(u.shape, bool)
        border[1:-1, 1:-1] = False
        h, w = u.shape
        row["dark_border"] = float((u[border] < DARK).mean())
        row["dark_centre"] = float((u[h // 4:h - h // 4, w // 4:w - w // 4] < DARK).mean())
        tissue = u[(u >= DARK) & (u <= BLOOD) & (seg == 0)]
        row["tissue_median"] = float(np.median(tissue)) if tissue.size else 0.0
        row["tissue_p90"] = float(np.percentile(tissue, 90)) if tissue.size else 0.0
        row["edge_p99"] = float(np.percentile(np.hypot(*np.gradient(u)), 99))
        present = tuple(row[f"{k}_mm2"] > 0 for k in ("lv", "myo", "rv"))
        row["type"] = {(True, True, True): "lv+myo+rv", (True, True, False): "lv+myo",
                       (False, False, False): "no pool"}.get(present)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(FEATURES) + ["type"])


def plausibility(images, pixel_mm: float) -> pd.DataFrame:
    """The strict check: a slice is plausible when it has an LV pool, a myocardium and an RV with areas in
    ``AREA_MM2``, the myocardium covers at least ``RING`` of the LV pool's outer rim, and the RV lies next to the
    myocardium (within two pixels)."""
    f = features(images, pixel_mm)
    sizes = np.all([(lo <= f[f"{k}_mm2"]) & (f[f"{k}_mm2"] <= hi) for k, (lo, hi) in AREA_MM2.items()], axis=0)
    out = f[["lv_mm2", "myo_mm2", "rv_mm2", "ring"]].copy()
    out["rv_touches_myo"] = f.rv_touches_myo > 0
    out["plausible"] = sizes & (f.ring >= RING) & out.rv_touches_myo
    return out


def calibrate(images, pixel_mm: float) -> dict:
    """Per admitted slice type: its share of the (training) slices and the [min, max] of every feature over them.
    ``{"types": {type: share}, "ranges": {type: {feature: (lo, hi)}}, "pixel_mm": pixel_mm}``."""
    f = features(images, pixel_mm)
    shares = f.type.value_counts(normalize=True)
    admitted = {t: float(shares.get(t, 0.0)) for t in TYPES if shares.get(t, 0.0) >= MIN_SHARE}
    ranges = {t: {k: (float(f[f.type == t][k].min()), float(f[f.type == t][k].max())) for k in FEATURES}
              for t in admitted}
    return {"types": admitted, "ranges": ranges, "pixel_mm": float(pixel_mm)}


def calibrated_plausibility(images, pixel_mm: float, calibration: dict) -> pd.DataFrame:
    """The calibrated check: ``features`` plus ``plausible`` (the slice's type is admitted and every feature lies
    in its range) and ``failed`` (the first feature outside its range, or 'type')."""
    if abs(calibration["pixel_mm"] - pixel_mm) > 1e-6:
        raise ValueError(f"calibrated at {calibration['pixel_mm']} mm pixels, asked for {pixel_mm} mm")
    f = features(images, pixel_mm)
    failed = []
    for _, row in f.iterrows():
        ranges = calibration["ranges"].get(row.type)
        bad = "type" if ranges is None else next((k for k in FEATURES if not ranges[k][0] <= row[k] <= ranges[k][1]),
                                                  "")
        failed.append(bad)
    f["failed"] = failed
    f["plausible"] = f.failed == ""
    return f


def _shares(types) -> pd.Series:
    cats = list(TYPES) + ["other"]
    if isinstance(types, dict):  # {type: share} (e.g. ``calibrate``'s): the rest is 'other'
        out = pd.Series({t: float(types.get(t, 0.0)) for t in TYPES})
        return pd.concat([out, pd.Series({"other": max(0.0, 1.0 - out.sum())})])
    t = pd.Series(list(types), dtype=object).where(lambda v: v.isin(list(TYPES)), "other")
    return t.value_counts(normalize=True).reindex(cats, fill_value=0.0)


def type_distribution(sample_types, reference) -> dict:
    """Shares of each type (and 'other': no admitted type) among samples and a reference (a list of real slices'
    types, or ``calibrate``'s {type: share}), their total-variation distance and the chi-square test of the
    samples' counts against the reference shares (expected counts get a floor of 0.5 so that the test is defined
    when the reference has no 'other')."""
    from scipy.stats import chisquare

    ps, pr = _shares(sample_types), _shares(reference)
    n = len(sample_types)
    expected = np.maximum(pr.to_numpy() * n, 0.5)
    chi = chisquare((ps.to_numpy() * n).round(), expected * n / expected.sum())
    return {"sample": ps.to_dict(), "real": pr.to_dict(), "tv": float(0.5 * np.abs(ps - pr).sum()),
            "chi2": float(chi.statistic), "p": float(chi.pvalue)}


def negative_controls(real, seed: int = 0) -> dict:
    """Images a plausibility check must reject, made from real slices (n, H, W, 1) in [-1, 1]: uniform noise, blank
    images (black, mid-grey, white, the real slices' mean grey), the real slices blurred (Gaussian sigma 2 px) and
    with their 8x8 patches shuffled."""
    rng = np.random.default_rng(seed)
    real = np.asarray(real, np.float32)
    n, h, w, _ = real.shape
    blank = np.concatenate([np.full((1, h, w, 1), v, np.float32) for v in (-1.0, 0.0, 1.0, float(real.mean()))])
    shuffled = []
    for image in real:
        patches = image.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
        patches = patches[rng.permutation(len(patches))]
        shuffled.append(patches.reshape(h // 8, w // 8, 8, 8).transpose(0, 2, 1, 3).reshape(h, w, 1))
    return {"uniform noise": rng.uniform(-1, 1, real.shape).astype(np.float32), "blank": blank,
            "blurred (sigma 2 px)": ndimage.gaussian_filter(real, (0, 2, 2, 0)),
            "8x8 patches shuffled": np.stack(shuffled)}


def report(samples, real, train, pixel_mm: float, title: str, real_name: str) -> tuple[pd.DataFrame, str]:
    """Both checks on ``samples``, on the ``real`` slices and on the negative controls made from them, and the
    slice-type distributions; the calibrated check is calibrated on ``train``. Returns (per-sample table: the
    calibrated features with ``plausible`` (strict) and ``plausible_calibrated``, markdown)."""
    cal = calibrate(train, pixel_mm)
    strict_s, cal_s = plausibility(samples, pixel_mm), calibrated_plausibility(samples, pixel_mm, cal)
    strict_r, cal_r = plausibility(real, pixel_mm), calibrated_plausibility(real, pixel_mm, cal)
    lines = [f"{title}, scored by the classical segmentation (`cardiac_plausibility`).", "",
             "| images | n | strict check: LV pool, myocardium ring and RV | calibrated check: a training slice type "
             "with features in its training range |", "|---|---|---|---|",
             f"| samples | {len(samples)} | {100 * strict_s.plausible.mean():.1f} % | "
             f"{100 * cal_s.plausible.mean():.1f} % |",
             f"| real: {real_name} | {len(real)} | {100 * strict_r.plausible.mean():.1f} % | "
             f"{100 * cal_r.plausible.mean():.1f} % |"]
    controls = dict(negative_controls(real))
    controls["real, left-right flipped (not a negative control: the phantoms' RV lies at any angle)"] = \
        np.asarray(real)[:, :, ::-1]
    for name, images in controls.items():
        lines.append(f"| {name} | {len(images)} | {100 * plausibility(images, pixel_mm).plausible.mean():.1f} % | "
                     f"{100 * calibrated_plausibility(images, pixel_mm, cal).plausible.mean():.1f} % |")
    dist, dist_t = type_distribution(cal_s.type, cal_r.type), type_distribution(cal_s.type, cal["types"])
    lines += ["", f"Slice types (by what the segmentation finds; calibration: {len(train)} training slices, "
                  f"types admitted: {', '.join(cal['types'])}):", "",
              "| type | samples | real (held out) | training slices | samples passing the calibrated check |",
              "|---|---|---|---|---|"]
    for t in list(TYPES) + ["other"]:
        of_type = cal_s[cal_s.type == t] if t != "other" else cal_s[~cal_s.type.isin(list(TYPES))]
        passing = f"{100 * of_type.plausible.mean():.0f} %" if len(of_type) else "-"
        lines.append(f"| {TYPES.get(t, 'other: no admitted type')} | {100 * dist['sample'][t]:.1f} % | "
                     f"{100 * dist['real'][t]:.1f} % | {100 * dist_t['real'][t]:.1f} % | {passing} |")
    lines += ["", f"Total-variation distance of the samples' type shares from the real held-out slices' "
                  f"{dist['tv']:.3f} (chi-square {dist['chi2']:.2f}, p = {dist['p']:.3g}), from the training slices' "
                  f"{dist_t['tv']:.3f} (chi-square {dist_t['chi2']:.2f}, p = {dist_t['p']:.3g}); the held-out "
                  f"slices' own distance from the training slices' shares: "
                  f"{type_distribution(cal_r.type, cal['types'])['tv']:.3f}."]
    failed = cal_s.failed[cal_s.failed != ""].value_counts()
    lines += ["", "Samples failing the calibrated check, by the first feature out of range: "
              + (", ".join(f"{k} {v}" for k, v in failed.items()) or "none") + "."]
    table = cal_s.drop(columns=["plausible"]).assign(plausible=strict_s.plausible.to_numpy(),
                                                     plausible_calibrated=cal_s.plausible.to_numpy())
    return table, "\n".join(lines) + "\n"
