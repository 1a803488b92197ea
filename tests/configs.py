"""Tiny .ini configs for the end-to-end tests: one base per method, each test overriding only what it needs."""
from __future__ import annotations

import copy

import imageio.v3 as iio

from ldseg_suite.data import synthetic

_LDSEG = {
    "Run": {"Method": "ldseg", "Seed": 0},
    "Data": {"Layout": "glas", "Size": "16, 16", "Channels": 3, "Classes": 2, "Binarize": "true",
             "Split": "0.5, 0.17, 0.33"},
    # one denoiser level, no attention: these tests exercise the CLI, not the network (test_ldseg_model.py does);
    # a training trace then costs ~20 % less CPU than with two levels and attention
    "Model": {"LatentChannels": 2, "ImageLatentChannels": 4, "Downsample": 2, "BaseChannels": 8,
              "ChannelMult": "1", "Attention": "false"},
    "NoiseScheduler": {"Timesteps": 50},
    "Sampler": {"Sampling_Steps": 3},
    # a few steps per run: eager steps (~1 CPU-s each) cost less than tracing the train step (~20 CPU-s); tests
    # that train longer or across processes set RunEagerly = false (the compiled path; test_ldseg_model.py too)
    "Training": {"Epochs": 1, "BatchSize": 2, "RunEagerly": "true"},
    "Output": {"Gifs": 0},
}
_UNET = {
    "Run": {"Method": "unet", "Seed": 0},
    "Data": dict(_LDSEG["Data"]),
    "Model": {"BaseChannels": 4, "ChannelMult": "1, 2"},
    "Training": {"Epochs": 1, "BatchSize": 2, "EMA": 0, "RunEagerly": "true"},
}
BASES = {"ldseg": _LDSEG, "unet": _UNET}


def tiny_ini(root, method: str = "ldseg", **sections) -> str:
    """The tiny config of ``method`` reading data at ``root``.

    Each keyword is a section whose keys replace the base's (a value of None drops the key; a section of None
    drops the section); new sections are appended. Example: ``tiny_ini(root, Training={"Epochs": 2})``.
    """
    cfg = copy.deepcopy(BASES[method])
    cfg["Data"] = {"Root": root, **cfg["Data"]}
    for name, keys in sections.items():
        if keys is None:
            cfg.pop(name, None)
            continue
        merged = {**cfg.get(name, {}), **keys}
        cfg[name] = {k: v for k, v in merged.items() if v is not None}
    return "".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) for name, keys in cfg.items())


def write_glas(root, n=6, size=24, seed=1, labels=True):
    """``n`` synthetic gland images (and their annotations) named as GlaS: train_<k>.bmp, train_<k>_anno.bmp."""
    root.mkdir(parents=True, exist_ok=True)
    for k, (rgb, lab) in enumerate(synthetic.make_glands(n, size, seed=seed)):
        iio.imwrite(root / f"train_{k + 1}.bmp", rgb)
        if labels:
            iio.imwrite(root / f"train_{k + 1}_anno.bmp", lab)
    return root
