"""A progress bar for long loops: tqdm when installed and stderr is a terminal, silent otherwise."""

import sys


def progress(iterable, total, desc):
    if not sys.stderr.isatty():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, unit="batch")
