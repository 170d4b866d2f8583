#!/bin/bash
# Data-parallel scaling of codec training on a lent multi-GPU machine: the same recipe, per-GPU batch and
# duration on 1 GPU and on N GPUs (torchrun), steps/s from each run's log. Needs .whl/ and the mini corpus as FLAC in $DATA (default .data/mini_gpu).
#
#   benchmarks/device/ddp_scaling.sh N MINUTES OUT_DIR [--set key=value ...]
set -u
ngpu=$1 minutes=$2 out=$3
shift 3
source "$(dirname "$0")/setup.sh"
mkdir -p "$out"
args=(recipes/codec/wavtokenizer_75_small.yaml --set task.data.train=${DATA:-.data/mini_gpu}/train.jsonl
      --set task.data.valid=${DATA:-.data/mini_gpu}/valid.jsonl --set 'task.valid_metrics=[]' --set trainer.max_minutes="$minutes"
      --set trainer.val_every=0 --set trainer.ckpt_every=100000 --set trainer.log_every=20 --set trainer.num_workers=8
      --set trainer.progress=false "$@")
python3 -m audiocodec.train "${args[@]}" --run-dir /tmp/ddp1 > "$out/gpu1.log" 2>&1
torchrun --standalone --nproc_per_node "$ngpu" -m audiocodec.train "${args[@]}" --run-dir /tmp/ddpN > "$out/gpu$ngpu.log" 2>&1
for f in "$out"/gpu*.log; do
    # steady state: the mean of the logged steps/s after the first two log lines
    echo "$(basename "$f" .log): $(grep -o 'perf/steps_per_s [0-9.]*' "$f" | awk 'NR>2{s+=$2;n++} END{printf "%.3f steps/s over %d logs", s/n, n}')"
done
