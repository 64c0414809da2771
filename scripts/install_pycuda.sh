#!/usr/bin/env bash
# Build and install pycuda from a folder made by scripts/download_pycuda.sh, with no network.
#
#   scripts/install_pycuda.sh FOLDER [CUDA_ROOT]     (defaults: .pycuda-src, $CUDA_ROOT or /usr/local/cuda)
#
# Needs python3 with numpy, setuptools and wheel, a CUDA toolkit and the NVIDIA driver's
# libcuda.so. Set CUDADRV_LIB_DIR to the folder holding libcuda.so to skip the search.
# Extra pip options (e.g. --target DIR) go in PIP_INSTALL_OPTS.
set -euo pipefail
src=$(cd "${1:-.pycuda-src}" && pwd)
cuda=${2:-${CUDA_ROOT:-/usr/local/cuda}}
[ -x "$cuda/bin/nvcc" ] || { echo "install_pycuda: no CUDA toolkit at $cuda (pass its root as the 2nd argument)" >&2; exit 1; }
read -r -a pipopts <<< "${PIP_INSTALL_OPTS:-}"

# 1. the pure-Python and wheel dependencies
python3 -m pip install -q --no-index --no-deps "${pipopts[@]}" "$src"/*.whl

# 2. the driver library pycuda links against
libdir=${CUDADRV_LIB_DIR:-}
if [ -z "$libdir" ]; then
    for f in $(ldconfig -p 2>/dev/null | awk '/libcuda\.so/ {print $NF}') \
             /usr/lib/x86_64-linux-gnu/libcuda.so* /usr/local/nvidia/lib64/libcuda.so* /usr/lib64/libcuda.so* \
             /usr/local/cuda/compat/libcuda.so* /usr/lib/wsl/lib/libcuda.so*; do
        if [ -e "$f" ]; then libdir=$(dirname "$f"); lib=$f; break; fi
    done
fi
[ -n "$libdir" ] || { echo "install_pycuda: libcuda.so not found; set CUDADRV_LIB_DIR to the folder holding it" >&2; exit 1; }
if [ ! -e "$libdir/libcuda.so" ]; then
    # only libcuda.so.1 is installed: give the linker an unversioned name in a scratch folder
    link=$(mktemp -d)
    ln -s "${lib:-$libdir/libcuda.so.1}" "$link/libcuda.so"
    libdir=$link
fi
echo "install_pycuda: toolkit $cuda, driver library in $libdir"

# 3. configure and build
build=$(mktemp -d)
tar -xzf "$src"/pycuda-*.tar.gz -C "$build"
cd "$build"/pycuda-*
flags=(--cuda-root="$cuda" --cudadrv-lib-dir="$libdir")
[ -e "$cuda/include/curand.h" ] || flags+=(--no-cuda-enable-curand)
python3 configure.py "${flags[@]}"
python3 -m pip install -q --no-deps --no-build-isolation "${pipopts[@]}" .
cd /
# an install into --target DIR is checked from there
for ((i = 0; i < ${#pipopts[@]}; i++)); do
    [ "${pipopts[$i]}" = "--target" ] && export PYTHONPATH="${pipopts[$((i + 1))]}${PYTHONPATH:+:$PYTHONPATH}"
done
python3 -c "import pycuda.driver as d; d.init(); print('pycuda', __import__('pycuda').VERSION_TEXT, '- devices:', d.Device.count())"
