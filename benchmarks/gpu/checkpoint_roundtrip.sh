#!/usr/bin/env bash
# A checkpoint trained with lightning.gpu on CUDA evaluates to the same loss with qelm.fused and
# default.qubit on the CPU, and one trained with qelm.fused on the CPU to the same with lightning.gpu.
# Run from the project's root on a machine where lightning.gpu runs; prints one line per evaluation.
set -euo pipefail
tmp=$(mktemp -d)
head -c 6000 qelm/data/corpus.txt > "$tmp/small.txt"
common="--data $tmp/small.txt --steps 3 --batch-size 2 --context-len 32 --no-twin --no-matched --eval-every 3"
python3 -m qelm train $common --backend lightning.gpu --device cuda --out "$tmp/gpu" | tail -1
python3 -m qelm train $common --backend qelm.fused --device cpu --out "$tmp/cpu" | tail -1
for run in gpu cpu; do
  for backend in lightning.gpu qelm.fused default.qubit; do
    printf "trained on %s, evaluated with %-14s " "$run" "$backend"
    python3 -m qelm eval --checkpoint "$tmp/$run/qelm" --data "$tmp/small.txt" --sample-tokens 0 --json \
      --backend "$backend" | python3 -c "import json, sys; d = json.load(sys.stdin); print('loss', repr(d['loss']))"
  done
done
rm -rf "$tmp"
