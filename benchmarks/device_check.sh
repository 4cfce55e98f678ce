#!/usr/bin/env bash
# One device session: GPU tests, sanitizers, benchmark.  Logs go to $OUT (or ./runs/device).
#   bash benchmarks/device_check.sh [tests|sanitize|bench|quickbench]...
set -u
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
for step in "$@"; do
  case $step in
    tests) python3 -m pytest -q -rs tests/test_gpu_kernels.py tests/test_launch.py tests/test_reference.py tests/test_llm_gpu.py tests/test_bench_report.py 2>&1 | tee "$OUT/gpu_tests.log" ;;
    sanitize)
      # --report-api-errors no: cuda-bindings (gpu/launch.py) probes the driver for every entry point
      # it knows, and those the installed driver lacks come back as host API errors that memcheck
      # would count; device memory errors and races are still reported.
      for tool in memcheck racecheck; do
        BCQ_GPU_EXAMPLES=6 compute-sanitizer --tool $tool --report-api-errors no --error-exitcode 9 python3 -m pytest -q -x \
          tests/test_gpu_kernels.py -k "matches_reference or several_splits or identity" 2>&1 \
          | tail -25 | tee "$OUT/sanitizer_$tool.log"
      done ;;
    bench) python3 -m benchmarks.gemv --out "$OUT" 2>&1 | tee "$OUT/bench.log" ;;
    quickbench) python3 -m benchmarks.gemv --quick --out "$OUT" 2>&1 | tee "$OUT/bench.log" ;;
  esac
done
