#!/bin/bash
# Train the TTS recipe on token folders carried to a lent GPU machine (tokens are tiny: carry them), resuming
# RUN_DIR; then copy the log and the final and best models (fp16, in 15 MB parts) to OUT_DIR. Rejoin with
# `cat OUT_DIR/tts-fp16.part* > model.safetensors` (best-fp16.part* for the best validation loss).
#
#   benchmarks/device/train_tts.sh MINUTES RUN_DIR TOKENS_DIR OUT_DIR [--set key=value ...]
#
# The learning-rate schedule runs over MINUTES of training time (trainer.schedule_by=time, resumes included),
# so a time-boxed run always finishes its cosine; trainer.max_steps is then the schedule's length in its own
# units (warmup_steps count in them) and an upper bound on real steps: set it above what the time allows,
# e.g. --set trainer.max_steps=100000 --set optim.main.scheduler.warmup_steps=2500 (H200: 12-26 steps/s).
set -u
minutes=$1 run=$2 tokens=$3 out=$4
shift 4
source "$(dirname "$0")/setup.sh"
mkdir -p "$out"
nvidia-smi dmon -s u -d 10 > "$out/dmon.txt" 2>&1 &
dmon=$!
common=(recipes/tts/mini.yaml --set task.train="$tokens/train" --set task.valid="$tokens/valid" --set trainer.progress=false)
fit=(--set trainer.max_minutes="$minutes" --set trainer.schedule_by=time)
"${launch[@]}" "${common[@]}" --run-dir "$run" "${fit[@]}" "$@"
rc=$?
kill "$dmon"
cp "$run/train.log" "$out/"
# the final model, and the best one by validation loss (trainer.best_metric) when there is one
for name in tts best; do
    [ -d "$run/$name" ] || continue
    python3 - "$run/$name" "$out/$name-fp16.safetensors" <<'PY'
import sys, torch
from audiocodec.tts import load_tts, save_tts
save_tts(load_tts(sys.argv[1]), sys.argv[2], dtype=torch.float16)
PY
    split -b 15M -d "$out/$name-fp16.safetensors" "$out/$name-fp16.part" && rm "$out/$name-fp16.safetensors"
done
exit $rc
