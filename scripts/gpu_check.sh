#!/usr/bin/env bash
# The checks that need a GPU, as one short run (sized for about 8 minutes on one H200):
#   1. tests/test_device.py on the device: every command in float64 equals the CPU's;
#   2. benchmarks/bench_scale.py: ResNet-18 (and the BatchNorm CNN) per probe and top-5, with
#      the peers that are installed there;
#   3. benchmarks/bench_lm.py: the GPT-2-style LM.
# Results (JSON lines, appended; a re-run skips what is there) and the log go to $OUT (default
# benchmarks/results): scale-DEVICE.jsonl, lm-DEVICE.jsonl, gpu-check.log. The tables of both
# benchmarks are printed at the end, for README.md.
#
#   bash scripts/gpu_check.sh                       # DEVICE=cuda, N=1024,4096, EIG_N=1024
#   DEVICE=cpu N=256 EIG_N=0 MODELS=cnn bash scripts/gpu_check.sh   # a dry run of the plumbing
#   (about 3.5 min on 2 cores; there bench_lm's curvlinops run outlasts its 120 s limit: exit 124)
set -uo pipefail
cd "$(dirname "$0")/.."
device=${DEVICE:-cuda}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec > >(tee -a "$out/gpu-check.log") 2>&1

python3 - <<PY
import torch
print("torch", torch.__version__, "| device:",
      torch.cuda.get_device_name() if "$device".startswith("cuda") else "cpu")
PY
tools=landscape,"landscape (block 1)","landscape (tight)"
for peer in hessian_eigenthings:hessian-eigenthings pyhessian:pyhessian curvlinops:curvlinops; do
    python3 -c "import ${peer%%:*}" 2>/dev/null && tools=$tools,${peer##*:}
done
echo "tools: $tools"

timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_device.py --device "$device"
echo "test_device: exit $?"
timeout 300 python3 benchmarks/bench_scale.py --device "$device" --models "${MODELS:-resnet18,cnn}" \
    --n "${N:-1024,4096}" --eig-n "${EIG_N:-1024}" --tools "$tools" \
    --results "$out/scale-$device.jsonl"
echo "bench_scale: exit $?"
lm_tools=landscape,"landscape (lean)"
[[ $tools == *hessian-eigenthings* ]] && lm_tools=$lm_tools,hessian-eigenthings
[[ $tools == *curvlinops* ]] && lm_tools=$lm_tools,curvlinops
timeout 120 python3 benchmarks/bench_lm.py --device "$device" --n "${LM_N:-16}" \
    --tools "$lm_tools" --results "$out/lm-$device.jsonl"
echo "bench_lm: exit $?"
