#!/usr/bin/env bash
# Codec recipe on the offline mini corpus (espeak-ng speech + fluidsynth music, 24 kHz mono), ESPnet style.
#
#   ./run.sh                                          # every stage: default corpus, wavtokenizer_75_small
#   ./run.sh --stage 1 --stop_stage 1 --config encodec_24k --ngpu 8
#   ./run.sh --scale toy --set trainer.max_steps=20   # a quick smoke run
#
# Stages (each one command of the audiocodec package; run from any folder, paths are relative to this one):
#   0  build the corpus into $data (egs/mini/local/make_corpus.py; installs espeak-ng, fluidsynth and the
#      GM soundfont from Debian when they are missing)
#   1  train recipes/codec/$config.yaml into $exp (run it again to resume; torchrun when --ngpu > 1);
#      the codec is exported to $exp/codec at every checkpoint
#   2  reconstruct the held-out test set with $exp/codec into $exp/decode/test/
#   3  score the test set (PESQ, STOI, SI-SDR, mel / STFT distance, V/UV F1, codebook use, bitrate)
#      into $exp/decode/metrics.json
#
# Options:
#   --stage N --stop_stage M   stages to run (default 0 .. 3)
#   --config NAME|FILE         a recipe of recipes/codec (without .yaml) or a YAML file (default wavtokenizer_75_small)
#   --scale toy|default|large  mini corpus size (default: default)
#   --data DIR                 corpus folder (default: data/mini_<scale>)
#   --exp DIR                  run folder (default: exp/<config>_<scale>)
#   --set KEY=VALUE            training config override, repeatable (e.g. --set trainer.batch_size=8)
#   --ngpu N                   GPUs for training (default 1)
#   --seed N                   corpus and training seed (default 0)
#   --device DEV               device of stages 2-3 (default auto)
#   --metrics LIST             metrics of stage 3, comma-separated (default: audiocodec eval's)
set -euo pipefail

stage=0
stop_stage=3
config=wavtokenizer_75_small
scale=default
data=
exp=
ngpu=1
seed=0
device=auto
metrics=
sets=()

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
need() { [ "$2" -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --stage) need "$1" $#; stage=$2 ;;
        --stop_stage|--stop-stage) need "$1" $#; stop_stage=$2 ;;
        --config) need "$1" $#; config=$2 ;;
        --scale) need "$1" $#; scale=$2 ;;
        --data) need "$1" $#; data=$2 ;;
        --exp) need "$1" $#; exp=$2 ;;
        --set) need "$1" $#; sets+=(--set "$2") ;;
        --ngpu) need "$1" $#; ngpu=$2 ;;
        --seed) need "$1" $#; seed=$2 ;;
        --device) need "$1" $#; device=$2 ;;
        --metrics) need "$1" $#; metrics=$2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift 2
done

cd "$(dirname "$0")"
repo=$(cd ../../.. && pwd)
if [ -f "$config" ]; then config_file=$config; else config_file=$repo/recipes/codec/$config.yaml; fi
name=$(basename "$config" .yaml)
data=${data:-data/mini_${scale}}
exp=${exp:-exp/${name}_${scale}}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    echo "stage 0: mini corpus ($scale) -> $data"
    python3 "$repo/egs/mini/local/make_corpus.py" "$data" --scale "$scale" --seed "$seed"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    echo "stage 1: train $config_file -> $exp"
    train_args=("$config_file" --run-dir "$exp" --set "task.data.train=$data/train.jsonl"
                --set "task.data.valid=$data/valid.jsonl" --set "trainer.seed=$seed" ${sets[@]+"${sets[@]}"})
    if [ "$ngpu" -gt 1 ]; then
        torchrun --standalone --nproc_per_node "$ngpu" -m audiocodec.train "${train_args[@]}"
    else
        audiocodec train "${train_args[@]}"
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    echo "stage 2: reconstruct $data/test.jsonl -> $exp/decode/test"
    audiocodec eval --manifest "$data/test.jsonl" --model "$exp/codec" --device "$device" \
        --save-audio "$exp/decode/test" --metrics mel_distance --json "$exp/decode/reconstruct.json" --quiet
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    echo "stage 3: score $data/test.jsonl -> $exp/decode/metrics.json"
    audiocodec eval --manifest "$data/test.jsonl" --model "$exp/codec" --device "$device" \
        ${metrics:+--metrics "$metrics"} --json "$exp/decode/metrics.json"
fi
