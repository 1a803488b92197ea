"""Copy a run's trained weights into weights/ for shipping: gzip-compressed HDF5 with float32 arrays stored as
float16 (Keras casts them back to the float32 variables on load). Half the size, so the demo weights stay under
the repository's limit; the shipped configs' results are measured with these shipped files.

    python scripts/ship_weights.py outputs/nuclei2d_unet/model.weights.h5 weights/nuclei2d/unet.weights.h5
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import h5py
import numpy as np


def ship(src: Path, dst: Path, half: bool = True) -> Path:
    tmp = dst.with_name(f".tmp_{dst.name}")
    with h5py.File(src, "r") as fin, h5py.File(tmp, "w") as fout:
        fout.attrs.update(fin.attrs)

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                fout.require_group(name).attrs.update(obj.attrs)
                return
            data = obj[()]
            if half and getattr(data, "dtype", None) == np.float32:
                data = data.astype(np.float16)
            big = obj.shape != () and obj.size > 64
            fout.create_dataset(name, data=data, **(dict(compression="gzip", compression_opts=9, shuffle=True)
                                                    if big else {}))
            fout[name].attrs.update(obj.attrs)

        fin.visititems(copy)
    os.replace(tmp, dst)
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--full", action="store_true", help="keep float32 (only compress)")
    a = p.parse_args()
    a.dst.parent.mkdir(parents=True, exist_ok=True)
    ship(a.src, a.dst, half=not a.full)
    print(f"{a.dst}: {a.dst.stat().st_size / 2 ** 20:.2f} MiB (from {a.src.stat().st_size / 2 ** 20:.2f} MiB)")


if __name__ == "__main__":
    main()
