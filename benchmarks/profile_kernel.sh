#!/usr/bin/env bash
# Nsight Compute counters and per-instruction stall samples of one kernel, and the LUT kernel's SASS (on a CUDA machine):
#   bash benchmarks/profile_kernel.sh [lut_gemv|bmma_gemv]     -> $OUT/ncu_metrics.txt, $OUT/sass.txt
set -u
OUT=${OUT:-runs/profile}; mkdir -p "$OUT"
export PYTHONPATH=.
KERNEL=${1:-lut_gemv}
tmp=$(mktemp -d)
cat > "$tmp/inst.cu" <<CU
#include "$PWD/gpu/lut_gemv.cu"
template __global__ void bcq::lut_gemv<1>(const __half*, const bcq::u32*, const __half*, const __half*, __half*,
                                          float*, unsigned int*, int, int, int, int, int, int);
CU
nvcc -std=c++17 -arch=sm_90 -DBCQ_EXACT_SPLIT_INPUTS=8192 -cubin -o "$tmp/inst.cubin" "$tmp/inst.cu" && cuobjdump -sass "$tmp/inst.cubin" > "$OUT/sass.txt"
stalls=$(for r in short_scoreboard mio_throttle long_scoreboard barrier wait math_pipe_throttle lg_throttle not_selected \
  no_instruction branch_resolving dispatch_stall selected; do printf 'smsp__average_warp_latency_issue_stalled_%s.ratio,' $r; done)
ncu --clock-control none --metrics "${stalls}smsp__inst_executed.sum,sm__cycles_elapsed.avg,gpu__time_duration.sum,\
l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,\
sm__sass_inst_executed_op_shared_ld.sum,sm__sass_inst_executed_op_global_ld.sum,smsp__thread_inst_executed_per_inst_executed.ratio,\
dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sector_hit_rate.pct,smsp__warps_active.avg.per_cycle_active,\
smsp__issue_active.avg.pct_of_peak_sustained_active,sm__cycles_active.avg" \
  -k regex:"$KERNEL" --launch-skip 2 -c 1 python3 -m benchmarks.profile_kernel 2 "$KERNEL" > "$OUT/ncu_metrics.txt" 2>&1
grep -E "$KERNEL<|\.sum|\.ratio|\.avg|\.pct|per_cycle" "$OUT/ncu_metrics.txt" | tail -30
# Per-instruction stall samples of the 70B-down launch (where the cycles go), top 45 lines.
ncu --clock-control none --section SourceCounters --section WarpStateStats -k regex:"$KERNEL" --launch-skip 2 -c 1 -f -o "$tmp/rep" \
  python3 -m benchmarks.profile_kernel 2 "$KERNEL" > /dev/null 2>&1
ncu --import "$tmp/rep.ncu-rep" --page source --csv --print-source sass > "$OUT/source.csv" 2>&1
python3 - "$OUT/source.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
hdr = next(i for i, r in enumerate(rows) if "Source" in r)
h, body = rows[hdr], rows[hdr + 1:]
print([c for c in h][:40])
key = next(c for c in h if "Warp Stall Sampling (All" in c)
ks, kx = h.index(key), h.index("Source")
body = [r for r in body if len(r) == len(h) and r[ks].replace(",", "").isdigit()]
tot = sum(int(r[ks].replace(",", "")) for r in body)
for r in sorted(body, key=lambda r: -int(r[ks].replace(",", "")))[:45]:
    print(f"{int(r[ks].replace(',', '')) / tot * 100:5.1f}%  {r[kx][:90]}")
PY
