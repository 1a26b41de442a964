#!/usr/bin/env bash
# Rows of the Penn Treebank table on a GPU machine: several `qelm ptb` processes at once on one GPU (each
# model is too small to fill it), each resumable; logs and results.json of every run come back in $OUT/runs.tgz.
#
#   bash benchmarks/gpu/ptb_runs.sh MINUTES JOB [JOB ...]      JOB = model:seed[:extra flags, '+' for spaces]
#   e.g. bash benchmarks/gpu/ptb_runs.sh 8 quixer:0 transformer:0 transformer:1 lstm:0:--dim+128
#
# Run folders live in /tmp/runs (kept while the machine stays warm: a later call resumes them). The wheels
# qelm needs beyond the GPU image (PennyLane and its dependencies) are installed from .whl/ once.
# qelm.fused's evolve kernels take minutes to compile on a fresh machine: CuPy's compile cache is kept in
# .cupy-cache (carry it) and comes back as $OUT/cupy-cache.tgz (unpack it into .cupy-cache for the next call).
set -u
minutes=$1; shift
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 CUPY_CACHE_DIR=$PWD/.cupy-cache
if [ ! -d /tmp/site/pennylane ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
fi
runs=/tmp/runs; mkdir -p "$runs"
export OMP_NUM_THREADS=2   # many small processes share the machine's cores
# CUDA MPS lets the processes' kernels run side by side instead of taking turns on the GPU; used only when
# its daemon starts and a client can reach it, otherwise the runs take turns as usual
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
if [ ! -e /tmp/mps-tried ] && command -v nvidia-cuda-mps-control >/dev/null; then
  touch /tmp/mps-tried; mkdir -p /tmp/mps-pipe /tmp/mps-log
  nvidia-cuda-mps-control -d && sleep 1
  if timeout 60 python3 -c "import torch; torch.ones(1, device='cuda').sum().item()"; then touch /tmp/mps-on
  else echo quit | nvidia-cuda-mps-control; sleep 1; fi
fi
[ -e /tmp/mps-on ] && echo "CUDA MPS: on" || echo "CUDA MPS: off"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for job in "$@"; do
  IFS=: read -r model seed extra <<< "$job"
  extra=${extra//+/ }
  name=$model-s$seed$(echo "$extra" | tr -c 'a-z0-9\n' '_' | sed 's/^_*/-/;s/-$//')
  python3 -m qelm ptb --model "$model" --seed "$seed" --eos quirk --device cuda --data data/ptb \
    --out "$runs/$name" --max-minutes "$minutes" $extra >> "$runs/$name.log" 2>&1 &
done
wait
for f in "$runs"/*.log; do echo "== $f"; tail -n 3 "$f"; done
(cd "$runs" && tar czf "${OUT:-.}/runs.tgz" *.log */results.json 2>/dev/null)
[ -d .cupy-cache ] && tar czf "${OUT:-.}/cupy-cache.tgz" .cupy-cache
