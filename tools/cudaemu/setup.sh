#!/usr/bin/env bash
# Build minidl's CPU execution of CUDA: the stand-in driver (libcuda.so.1), the reference cuBLAS
# (libcublas.so.13), the stand-in nvcc, and the real pycuda built from its sdist against them.
#
#   tools/cudaemu/setup.sh            prints the prefix it built (or found cached) on its last line
#
# The prefix is ${CUEMU_CACHE:-~/.cache/minidl-cudaemu}/<hash of these sources and the pycuda
# version>, so a second run (another clone, a later CI run on the same machine) reuses it in a
# second. Needs g++, a CUDA toolkit (nvcc and cuda.h; CUDA_ROOT, default /usr/local/cuda), python3
# with numpy, setuptools and wheel, and pycuda's sdist: from PyPI, or from a folder of
# scripts/download_pycuda.sh given as CUEMU_PYCUDA_SRC. tools/cudaemu/run uses the prefix.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cuda=${CUDA_ROOT:-/usr/local/cuda}
pycuda_version=${CUEMU_PYCUDA_VERSION:-2026.1}
python=${PYTHON:-python3}
[ -e "$cuda/include/cuda.h" ] || { echo "cudaemu setup: no CUDA toolkit at $cuda (set CUDA_ROOT)" >&2; exit 1; }

# the libraries are rebuilt whenever these sources change; pycuda (minutes to build) only for a new
# pycuda or Python, since it links the driver by its soname alone
cache=${CUEMU_CACHE:-$HOME/.cache/minidl-cudaemu}
key=$( (cd "$here" && cat setup.sh gen_stubs.py nvcc src/*) | sha256sum | cut -c1-16)
pykey=pycuda-$pycuda_version-$("$python" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')
prefix=$cache/$key
site=$cache/$pykey
if [ -e "$prefix/.complete" ] && [ -e "$site/.complete" ]; then
    echo "$prefix"
    exit 0
fi
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

if [ ! -e "$prefix/.complete" ]; then
echo "cudaemu setup: building the stand-in libraries into $prefix" >&2
rm -rf "$prefix"
mkdir -p "$prefix/lib64" "$prefix/bin"
ln -s "$site" "$prefix/site"

# 1. the stand-in driver: implemented functions, then stubs for the rest of cuda.h
flags=(-std=c++17 -O2 -fPIC -Wall -I "$cuda/include" -I "$here/src")
g++ "${flags[@]}" -c "$here/src/driver.cpp" -o "$build/driver.o"
g++ "${flags[@]}" -c "$here/src/fibers.cpp" -o "$build/fibers.o"
"$python" "$here/gen_stubs.py" "$cuda/include" "$build/driver.o" "$build/fibers.o" > "$build/stubs.c"
gcc -O1 -fPIC -c "$build/stubs.c" -o "$build/stubs.o"
g++ -shared -Wl,-soname,libcuda.so.1 -o "$prefix/lib64/libcuda.so.1" "$build/driver.o" "$build/fibers.o" "$build/stubs.o" -ldl
ln -sf libcuda.so.1 "$prefix/lib64/libcuda.so"

# 2. the reference cuBLAS
g++ -std=c++17 -O2 -fPIC -shared -Wl,-soname,libcublas.so.13 -o "$prefix/lib64/libcublas.so.13" "$here/src/cublas.cpp"
ln -sf libcublas.so.13 "$prefix/lib64/libcublas.so"

# 3. the stand-in nvcc, with the kernel-side headers it compiles against (copies: the cache outlives a clone)
mkdir -p "$prefix/include"
cp "$here/src/cuemu.h" "$here/src/cuemu_abi.h" "$prefix/include/"
cp "$here/nvcc" "$prefix/bin/nvcc"

touch "$prefix/.complete"
fi

# 4. pycuda, unchanged, from its sdist, linked against the stand-in driver
if [ ! -e "$site/.complete" ]; then
echo "cudaemu setup: building pycuda $pycuda_version into $site (a few minutes, once)" >&2
rm -rf "$site"
mkdir -p "$site"
src=$build/sdist
mkdir -p "$src"
if [ -n "${CUEMU_PYCUDA_SRC:-}" ]; then
    cp "$CUEMU_PYCUDA_SRC"/pycuda-*.tar.gz "$src/"
    deps=("$CUEMU_PYCUDA_SRC"/*.whl)
    "$python" -m pip install -q --no-index --no-deps --target "$site" "${deps[@]}"
else
    CUDA_ROOT=$cuda "$python" -m pip download -q --no-deps --no-binary pycuda --no-build-isolation \
        "pycuda==$pycuda_version" -d "$src"
    "$python" -m pip install -q --no-deps --target "$site" pytools platformdirs mako markupsafe siphash24 \
        typing_extensions
fi
# pycuda builds without isolation (against this Python's numpy): its other build needs must be here
"$python" -m pip install -q setuptools wheel >&2
tar -xzf "$src"/pycuda-*.tar.gz -C "$build"
(
    cd "$build"/pycuda-*/
    "$python" configure.py --cuda-root="$cuda" --cudadrv-lib-dir="$prefix/lib64" --no-cuda-enable-curand >/dev/null
    "$python" -m pip install -q --no-deps --no-build-isolation --target "$site" . >"$build/pycuda.log" 2>&1 \
        || { cat "$build/pycuda.log" >&2; echo "cudaemu setup: building pycuda failed (log above)" >&2; exit 1; }
)
touch "$site/.complete"
fi
echo "$prefix"
