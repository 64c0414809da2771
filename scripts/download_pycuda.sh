#!/usr/bin/env bash
# Download pycuda's source and the dependencies it needs into a folder, on a machine that
# reaches PyPI, for scripts/install_pycuda.sh to install on an offline CUDA machine.
#
#   scripts/download_pycuda.sh FOLDER [PYTHON_VERSION]      (default FOLDER .pycuda-src, version 3.12)
#
# pycuda comes as its sdist (it is compiled against the target's CUDA); the compiled
# dependencies (siphash24, markupsafe) come as wheels for the target's Python version.
set -euo pipefail
dest=${1:-.pycuda-src}
pyver=${2:-3.12}
mkdir -p "$dest"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

# pycuda's metadata step looks for a CUDA root even when only downloading
CUDA_ROOT=${CUDA_ROOT:-/usr/local/cuda} python3 -m pip download --no-deps --no-binary pycuda pycuda -d "$dest"
python3 -m pip download --no-deps -d "$dest" pytools platformdirs mako typing_extensions
python3 -m pip download --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    "${platforms[@]}" -d "$dest" siphash24 markupsafe
echo "downloaded into $dest:"
ls -1 "$dest"
