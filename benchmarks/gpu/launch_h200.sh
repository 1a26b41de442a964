#!/usr/bin/env bash
# Launch overhead on one GPU, in about 8 minutes: the CUDA-graph tests, then the figures of launch-bound
# inference and generation (qelm.decode) beside the classical twin, and torch.compile against eager and graphs.
# Run from the project's root with qelm importable (an installed qelm, or PYTHONPATH holding the checkout) and
# OUT set to a folder; every step is bounded by its own time limit, and each writes JSON into $OUT that records
# its exact command and the GPU. Progress lines go to stdout.
#
#   OUT=/tmp/out bash benchmarks/gpu/launch_h200.sh
set -uo pipefail
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
PY=${PYTHON:-python3}
start=$(date +%s)
step() { echo "[$(( $(date +%s) - start )) s] $*"; }

step "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
"$PY" -c "import torch, qelm; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'qelm', qelm.__version__)"

step "1/5 the gpu tests of CUDA-graph replay and of the feature-form kernel (tests/test_decode.py, tests/test_cuda_graph.py, tests/test_features_kernel.py; without pytest, the graphs' checks as a script)"
if "$PY" -c "import pytest" 2>/dev/null; then
  timeout 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_decode.py tests/test_cuda_graph.py tests/test_features_kernel.py 2>&1 \
    | tee "$OUT/gpu-tests.txt" | tail -15
  echo "exit ${PIPESTATUS[0]}" >> "$OUT/gpu-tests.txt"
else
  timeout 80 "$PY" benchmarks/gpu/graph_checks.py --out "$OUT/graph-checks-h200.json"
fi

step "2/5 qelm bench, batch 2, T = 512 and 2048: inference and generation, graphed and eager, QELM and twin"
timeout 115 "$PY" -m qelm bench --device cuda --seq-lens 512,2048 --batch-size 2 --modes inference,generation \
  --gen-tokens 64 --repeats 8 --max-seconds 2.5 --json "$OUT/bench-launch-b2-h200.json" | tail -25

step "3/5 one decode step at batch 8, and generation tokens/s at batch 8 and 1, T = 512 (64 new tokens): eager (the growing cache), graphed"
timeout 100 "$PY" benchmarks/launch.py --device cuda --seq-lens 512 --modes decode,generation --batch 8 --gen-batches 8,1 \
  --gen-tokens 64 --ways eager,graphs --repeats 6 --max-seconds 2 --out "$OUT/launch-generation-h200.json"

step "4/5 torch.compile: inference at T = 512 and 2048, batch 2: eager, graphs, compiled and graphed"
timeout 105 "$PY" benchmarks/launch.py --device cuda --seq-lens 512,2048 --batch 2 --modes inference \
  --ways eager,graphs,compiled+graphs --repeats 20 --max-seconds 2 --out "$OUT/launch-compile-inference-h200.json"

step "5/5 torch.compile: the decode step (eager, graphs, compiled and graphed) and training (eager, compiled) at T = 512, batch 2"
timeout 85 "$PY" benchmarks/launch.py --device cuda --seq-lens 512 --batch 2 --modes decode,training \
  --ways eager,graphs,compiled+graphs --repeats 20 --max-seconds 2 --out "$OUT/launch-compile-h200.json"

step "done; results in $OUT:"
ls -l "$OUT"
