#!/usr/bin/env bash
# The real-GPU check of the wgpu backend (issue 7): on a machine with an NVIDIA GPU,
# Vulkan loaders and PyTorch with CUDA, but no Rust toolchain and no internet, run
# xkern-bench on the wgpu backend and PyTorch on CUDA for the same cases, in one go,
# and print one table of ratios. Usage, from the repository root:
#
#   benches/gpu-check.sh [path/to/xkern-bench]      # default: target/release/xkern-bench
#
# Build the binary where Rust is (`cargo build --release -p xkern-bench`, x86-64) and
# carry it with the repository. Vulkan loaders, when the machine lacks them, can be
# carried as Debian packages in `.gl/` (see the device README); they are unpacked here.
# GPU_CHECK_CASES picks another cases file; GPU_CHECK_XKERN_ONLY=1 skips PyTorch (the
# smoke test used where there is no GPU: GPU_CHECK_CASES=benches/cases/gpu-check-smoke.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:-target/release/xkern-bench}
cases=${GPU_CHECK_CASES:-benches/cases/gpu-check.json}
out=${GPU_CHECK_OUT:-$(mktemp -d)}
if [ -d .gl ] && ! ldconfig -p | grep -q libvulkan; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
    export VK_DRIVER_FILES=$icd
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L || true
test -x "$bench" || { echo "gpu-check: no xkern-bench at $bench" >&2; exit 1; }
# xkern first, then PyTorch: the two never share the GPU at the same time.
"$bench" --backend wgpu --cases "$cases" --json "$out/xkern.jsonl" --quiet
extra=()
if [ "${GPU_CHECK_XKERN_ONLY:-0}" = 1 ]; then extra=(--xkern-only); fi
python3 benches/gpu_check.py --cases "$cases" --xkern "$out/xkern.jsonl" "${extra[@]}"
