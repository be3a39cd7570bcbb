"""load_dataset(name, data_dir): one entry point for the CLI and scripts."""
from __future__ import annotations

from typing import Optional, Tuple

from convcore.data.cifar import load_cifar10
from convcore.data.digits import load_digits
from convcore.data.idx import load_mnist
from convcore.utils.types import PathLike
from convcore.data.dataset import ArrayDataset

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")


def load_dataset(name: str, data_dir: Optional[PathLike] = None,
                 seed: int = 0) -> Tuple[ArrayDataset, ArrayDataset]:
    """(train, test) ArrayDatasets of a named data set.

    "digits" is embedded (no data_dir; `seed` fixes its split); "mnist",
    "fashion-mnist" and "cifar10" read files from `data_dir` (their own
    train/test split)."""
    if name not in DATASETS:
        raise ValueError(f"load_dataset: unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    if name == "digits":
        return load_digits(seed=seed)
    if data_dir is None:
        raise ValueError(f"load_dataset: {name!r} is read from files; pass data_dir "
                         f"(the directory holding them)")
    if name == "cifar10":
        return load_cifar10(data_dir)
    return load_mnist(data_dir, kind=name)
