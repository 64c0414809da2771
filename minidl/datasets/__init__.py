"""Datasets from local files (no downloads); augmentation of host batches (augment.py) and a
background loader (loader.py)."""

from minidl.datasets.augment import (  # noqa: F401
    Compose, Normalize, RandomApply, RandomCrop, RandomHorizontalFlip,
)
from minidl.datasets.datasets import loadCifar10, loadDigits  # noqa: F401
from minidl.datasets.loader import Loader, LoaderBatch  # noqa: F401
