"""Datasets from local files (no downloads)."""

from minidl.datasets.datasets import loadCifar10, loadDigits  # noqa: F401
