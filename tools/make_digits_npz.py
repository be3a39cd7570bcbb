"""Regenerate convcore/data/_digits.npz from scikit-learn's copy of the UCI
optical handwritten digits (public domain; 1,797 8x8 images, grey levels 0..16).

convcore ships this file so the default data set needs no download and no
optional dependency. Run once (needs scikit-learn):

    python tools/make_digits_npz.py          # writes the file, prints its SHA-256
    python tools/make_digits_npz.py --check  # verifies the shipped file equals sklearn's
"""
import argparse
import hashlib
import os
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), os.pardir, "convcore", "data", "_digits.npz")


def sklearn_digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    # The grey levels are integers 0..16 stored as float64: uint8 is lossless.
    if not np.array_equal(d.images, np.round(d.images)) or d.images.max() > 16:
        raise SystemExit("unexpected: sklearn digits are not integers in 0..16")
    return d.images.astype(np.uint8), d.target.astype(np.uint8)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare the shipped file with sklearn's data")
    args = p.parse_args(argv)
    images, labels = sklearn_digits()
    path = os.path.normpath(OUT)
    if args.check:
        with np.load(path, allow_pickle=False) as f:
            same = np.array_equal(f["images"], images) and np.array_equal(f["labels"], labels)
        print(f"{path}: {'identical to' if same else 'DIFFERS from'} sklearn.datasets.load_digits()")
        return 0 if same else 1
    np.savez_compressed(path, images=images, labels=labels)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {path}: {images.shape} images, {os.path.getsize(path)} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
