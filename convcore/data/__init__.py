"""convcore.data: data sets in memory, readers, batching and augmentation.

    files on disk                 embedded
    MNIST/Fashion IDX (.gz)       _digits.npz (UCI digits, 8x8)
    CIFAR-10 binary batches            |
         |  idx.py, cifar.py           |  digits.py
         v  (validated, never pickle)  v
    ArrayDataset(images float32 NCHW in [0,1], labels int64, classes)
         |  splits.py: stratified_split / stratified_kfold
         |  class_weights.py: "balanced" inverse-frequency weights
         v
    DataLoader(batch_size, shuffle, seed, drop_last, transform, prefetch)
         |  transforms.py: RandomHorizontalFlip, RandomShift, RandomRotation,
         |                 Normalize.fit(train images), Compose
         v  crops.py: RandomCrop, center_crop, multi_crop (5/10-crop evaluation)
    (images, labels) batches -> convcore.training
"""
from convcore.data.catalog import DATASETS, load_dataset
from convcore.data.cifar import CIFAR10_CLASSES, load_cifar10, read_cifar_batch, write_cifar_batch
from convcore.data.class_weights import class_weights
from convcore.data.crops import RandomCrop, center_crop, crop, multi_crop
from convcore.data.dataset import ArrayDataset
from convcore.data.digits import load_digits, load_digits_arrays
from convcore.data.idx import load_fashion_mnist, load_mnist, read_idx, write_idx
from convcore.data.loader import DataLoader
from convcore.data.splits import stratified_kfold, stratified_split
from convcore.data.transforms import (Compose, Normalize, RandomHorizontalFlip, RandomRotation,
                                      RandomShift, channel_stats, rotate)

__all__ = [
    "ArrayDataset", "DataLoader", "DATASETS", "load_dataset", "load_digits", "load_digits_arrays",
    "load_mnist", "load_fashion_mnist", "load_cifar10", "read_idx", "write_idx",
    "read_cifar_batch", "write_cifar_batch", "CIFAR10_CLASSES", "class_weights",
    "stratified_split", "stratified_kfold", "Compose", "Normalize", "RandomHorizontalFlip",
    "RandomRotation", "RandomShift", "channel_stats", "rotate",
    "RandomCrop", "center_crop", "crop", "multi_crop",
]
