#!/bin/bash
# Train the TTS recipe on token folders carried to a lent GPU machine (tokens are tiny: carry them), resuming
# RUN_DIR; then copy the log and the model (fp16, in 15 MB parts) to OUT_DIR. Rejoin with
# `cat OUT_DIR/tts-fp16.part* > model.safetensors`.
#
#   benchmarks/device/train_tts.sh MINUTES RUN_DIR TOKENS_DIR OUT_DIR [--set key=value ...]
#   PROBE_SECONDS=30 benchmarks/device/train_tts.sh ...   # fit the LR schedule to MINUTES: a short probe run
#       measures steps/s, then trainer.max_steps = steps/s x MINUTES (a new run only; a resumed one keeps its own)
set -u
minutes=$1 run=$2 tokens=$3 out=$4
shift 4
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p "$out"
nvidia-smi dmon -s u -d 10 > "$out/dmon.txt" 2>&1 &
dmon=$!
launch=(python3 -m audiocodec.train)
[ "${NGPU:-1}" -gt 1 ] && launch=(torchrun --standalone --nproc_per_node "$NGPU" -m audiocodec.train)
common=(recipes/tts/mini.yaml --set task.train="$tokens/train" --set task.valid="$tokens/valid" --set trainer.progress=false)
fit=(--set trainer.max_minutes="$minutes")
if [ "${PROBE_SECONDS:-0}" != 0 ] && ! ls "$run"/checkpoints/step_* >/dev/null 2>&1; then
    rm -rf /tmp/tts_probe
    "${launch[@]}" "${common[@]}" "$@" --run-dir /tmp/tts_probe --set trainer.log_every=10 --set trainer.val_every=0 \
        --set trainer.ckpt_every=1000000 --set trainer.max_minutes="$(python3 -c "print($PROBE_SECONDS / 60)")" \
        > "$out/probe.log" 2>&1
    # steady state: the logged steps/s after the first log line (start-up)
    steps=$(grep -o 'perf/steps_per_s [0-9.]*' /tmp/tts_probe/train.log |
            awk -v m="$minutes" 'NR>1{s+=$2;n++} END{if (n) printf "%d", 0.97 * 60 * m * s / n}')
    [ -n "$steps" ] || { echo "the probe logged no speed: see $out/probe.log"; exit 1; }
    echo "probe: trainer.max_steps=$steps fits $minutes minutes" | tee -a "$out/probe.log"
    fit=(--set trainer.max_steps="$steps" --set trainer.max_minutes="$(python3 -c "print($minutes * 1.1)")")
fi
"${launch[@]}" "${common[@]}" --run-dir "$run" "${fit[@]}" "$@"
rc=$?
kill "$dmon"
cp "$run/train.log" "$out/"
python3 - "$run/tts" "$out/tts-fp16.safetensors" <<'PY'
import sys, torch
from audiocodec.tts import load_tts, save_tts
save_tts(load_tts(sys.argv[1]), sys.argv[2], dtype=torch.float16)
PY
split -b 15M -d "$out/tts-fp16.safetensors" "$out/tts-fp16.part" && rm "$out/tts-fp16.safetensors"
exit $rc
