#!/usr/bin/env bash
# Every GPU check in one call, for a machine with an NVIDIA GPU and the CUDA
# toolkit (no Paddle needed): builds tests/cuda/test_kurtosis_cuda.cu for the
# GPU present, runs it (correctness and timing), runs its --quick subset under
# compute-sanitizer memcheck and racecheck, and writes docs/results/gpu.md
# naming the device. Also copies the report to $OUT when that is set.
# Exit status: 0 only when the build, the test and both sanitizers passed.
set -uo pipefail
cd "$(dirname "$0")/../.."

NVCC=${NVCC:-nvcc}
SANITIZER=$(command -v compute-sanitizer || ls -d /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n1)
work=build/gpu-checks
report=docs/results/gpu.md
mkdir -p "$work" docs/results

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "run_gpu_checks: no GPU (nvidia-smi -L failed): nothing run" >&2
  exit 1
fi

"$NVCC" -O2 -std=c++17 -arch=native -lineinfo -Xcompiler -fopenmp -Icsrc tests/cuda/test_kurtosis_cuda.cu \
  -o "$work/test_kurtosis_cuda" || { echo "run_gpu_checks: build failed" >&2; exit 1; }

rm -f "$work/test.md"
"$work/test_kurtosis_cuda" --require-gpu --markdown "$work/test.md" 2>&1 | tee "$work/test.log"
test_rc=${PIPESTATUS[0]}

sanitize() {  # tool -> exit status; output in $work/<tool>.txt
  if [ -z "$SANITIZER" ]; then echo "compute-sanitizer not found" > "$work/$1.txt"; return 127; fi
  "$SANITIZER" --tool "$1" --error-exitcode 99 "$work/test_kurtosis_cuda" --quick --require-gpu \
    > "$work/$1.txt" 2>&1
}
sanitize memcheck; memcheck_rc=$?
sanitize racecheck; racecheck_rc=$?

verdict() { [ "$1" = 0 ] && echo "passed" || echo "FAILED (exit $1)"; }
{
  echo "# CUDA kernels on a GPU"
  echo
  echo "Written by \`tests/cuda/run_gpu_checks.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n1)"
  echo "- nvcc: $("$NVCC" --version | grep -m1 release)"
  echo "- build: \`$NVCC -O2 -std=c++17 -arch=native -lineinfo -Xcompiler -fopenmp -Icsrc tests/cuda/test_kurtosis_cuda.cu\`"
  echo "- test: $(verdict $test_rc); compute-sanitizer memcheck: $(verdict $memcheck_rc); racecheck: $(verdict $racecheck_rc) (both on \`--quick\`)"
  echo
  if [ -f "$work/test.md" ]; then
    cat "$work/test.md"
  else  # it stopped before writing its report: its last output
    echo '```'
    tail -n 40 "$work/test.log"
    echo '```'
  fi
  echo
  echo "## compute-sanitizer"
  echo
  for tool in memcheck racecheck; do
    echo "### $tool"
    echo
    echo '```'
    grep -E "SUMMARY|Error|error|Hazard|hazard|not found" "$work/$tool.txt" | tail -n 20
    echo '```'
    echo
  done
} > "$report"
echo "run_gpu_checks: wrote $report"
if [ -n "${OUT:-}" ]; then cp "$report" "$work"/*.txt "$work"/test.* "$OUT"/ 2>/dev/null; fi
[ "$test_rc" = 0 ] && [ "$memcheck_rc" = 0 ] && [ "$racecheck_rc" = 0 ]
