#!/usr/bin/env bash
# Everything a lent GPU machine must do, in one call of at most 10 minutes, with no registry there:
#
#   scripts/gpu_check.sh [OUTDIR] [PYCUDA_FOLDER]      (defaults: $OUT or gpu_check_out, .pycuda-src)
#
# 1. env.log      nvidia-smi, Python, numpy/h5py/torch, nvcc and driver versions
# 2. install.log  pycuda built from the carried folder (scripts/download_pycuda.sh FOLDER 3.12, made
#                 beforehand on a machine with PyPI) into a scratch target, nothing installed system-wide
# 3. suite.log    the whole test suite with MINIDL_BACKEND=cuda (junit in suite.xml)
# 4. example.log  examples/train_mobilenet.py on the GPU
# 5. bench.log    benchmarks/run.py --backend cuda (JSON in bench.json)
# summary.txt     each step's exit code and seconds
#
# Each step has its own time limit (seconds: GPU_CHECK_LIMITS="install suite example bench", default
# "180 240 60 90", 570 in all) and a failing step does not stop the later ones. The rehearsal on a
# machine without a GPU runs the same script under the CPU execution of CUDA:
#   CUDADRV_LIB_DIR=<stand-in lib> tools/cudaemu/run scripts/gpu_check.sh OUTDIR FOLDER
# where GPU_CHECK_PYTEST_ARGS, GPU_CHECK_EXAMPLE_ARGS and GPU_CHECK_BENCH_ARGS shrink the suite,
# the example and the benchmark to what fits the time on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check_out}}
src=${2:-.pycuda-src}
read -r limitInstall limitSuite limitExample limitBench <<< "${GPU_CHECK_LIMITS:-180 240 60 90}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
site=$(mktemp -d)/site
: > "$out/summary.txt"
export PYTHONUNBUFFERED=1 MINIDL_BACKEND=cuda out src site

step() {  # step NAME LIMIT COMMAND...: run with a limit, log to NAME.log, record the exit code
    local name=$1 limit=$2 start rc
    shift 2
    # a function of this script runs in a child bash, which timeout can start
    if declare -F "$1" >/dev/null; then set -- bash -c "$(declare -f "$1"); $1"; fi
    start=$(date +%s)
    echo "== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
    rc=$?
    printf '%-8s rc=%-3s %4ss\n' "$name" "$rc" "$(( $(date +%s) - start ))" | tee -a "$out/summary.txt"
    tail -n 3 "$out/$name.log"
}

environment() {
    date -u
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
    python3 --version
    python3 -c 'import numpy, h5py; print("numpy", numpy.__version__, "h5py", h5py.__version__)'
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' \
        || echo "torch: not importable"
    command -v nvcc >/dev/null && nvcc --version
    git log -1 --format='minidl %H %s' 2>/dev/null || true
}

install() {
    [ -d "$src" ] || { echo "gpu_check: no pycuda folder at $src (make it with scripts/download_pycuda.sh)"; return 1; }
    PIP_INSTALL_OPTS="--target $site" scripts/install_pycuda.sh "$src" || return 1
    PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} python3 -c \
        'import pycuda.driver as d; d.init(); print(d.Device(0).name(), d.Device(0).compute_capability())'
}

suite() {
    # the CUDA backend must load: with MINIDL_BACKEND=cuda a suite without it would only skip
    python3 -c 'import minidl.backend as B; B.setBackend("cuda"); print("minidl CUDA backend loaded")' || return 1
    read -r -a args <<< "${GPU_CHECK_PYTEST_ARGS:-tests}"
    python3 -m pytest -q -p no:cacheprovider --durations=15 --junitxml="$out/suite.xml" "${args[@]}"
}

step env 60 environment
step install "$limitInstall" install
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
step suite "$limitSuite" suite
read -r -a exampleArgs <<< "${GPU_CHECK_EXAMPLE_ARGS:-}"
step example "$limitExample" python3 examples/train_mobilenet.py --out "$out/example.h5" "${exampleArgs[@]}"
rm -f "$out/example.h5"
read -r -a benchArgs <<< "${GPU_CHECK_BENCH_ARGS:-}"
step bench "$limitBench" python3 benchmarks/run.py --backend cuda --json "$out/bench.json" "${benchArgs[@]}"
echo "logs in $out:"
ls "$out"
