#!/usr/bin/env bash
# LJSpeech codec recipe: one speaker, 13,100 clips, 24 h, 22.05 kHz (resampled to the codec's rate).
#
# Get LJSpeech-1.1 from https://keithito.com/LJ-Speech-Dataset/ and extract it (LJSpeech-1.1/wavs, metadata.csv).
#
#   ./run.sh --root /data/LJSpeech-1.1                     # every stage
#   ./run.sh --stage 1 --stop_stage 1 --ngpu 8 --config wavtokenizer_75
#
# Stages (each one command of the audiocodec package; paths are relative to this folder):
#   0  write jsonl manifests of the local corpus at --root into $data
#      (clips split at random: --n_valid / --n_test clips); nothing is downloaded
#   1  train recipes/codec/$config.yaml into $exp (run it again to resume; torchrun when --ngpu > 1);
#      the codec is exported to $exp/codec at every checkpoint
#   2  reconstruct the test set with $exp/codec into $exp/decode/test/
#   3  score the test set (PESQ, STOI, SI-SDR, mel / STFT distance, V/UV F1, codebook use, bitrate)
#      into $exp/decode/metrics.json
#
# Options:
#   --root DIR                 the extracted corpus (needed by stage 0)
#   --stage N --stop_stage M   stages to run (default 0 .. 3)
#   --config NAME|FILE         a recipe of recipes/codec (without .yaml) or a YAML file (default wavtokenizer_75_small)
#   --data DIR                 manifest folder (default data)
#   --exp DIR                  run folder (default exp/<config>)
#   --set KEY=VALUE            training config override, repeatable (e.g. --set trainer.batch_size=16)
#   --ngpu N                   GPUs for training (default 1)
#   --seed N                   split and training seed (default 0)
#   --device DEV               device of stages 2-3 (default auto)
#   --metrics LIST             metrics of stage 3, comma-separated (default: audiocodec eval's)
#   --workers N                threads reading audio headers in stage 0 (default 8)
#   --n_valid N --n_test N     clips held out for validation / test (default 100 / 100)
set -euo pipefail

root=
stage=0
stop_stage=3
config=wavtokenizer_75_small
data=data
exp=
ngpu=1
seed=0
device=auto
metrics=
workers=8
n_valid=100
n_test=100
sets=()

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
need() { [ "$2" -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --root) need "$1" $#; root=$2 ;;
        --stage) need "$1" $#; stage=$2 ;;
        --stop_stage|--stop-stage) need "$1" $#; stop_stage=$2 ;;
        --config) need "$1" $#; config=$2 ;;
        --data) need "$1" $#; data=$2 ;;
        --exp) need "$1" $#; exp=$2 ;;
        --set) need "$1" $#; sets+=(--set "$2") ;;
        --ngpu) need "$1" $#; ngpu=$2 ;;
        --seed) need "$1" $#; seed=$2 ;;
        --device) need "$1" $#; device=$2 ;;
        --metrics) need "$1" $#; metrics=$2 ;;
        --workers) need "$1" $#; workers=$2 ;;
        --n_valid) need "$1" $#; n_valid=$2 ;;
        --n_test) need "$1" $#; n_test=$2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift 2
done

cd "$(dirname "$0")"
repo=$(cd ../../.. && pwd)
if [ -f "$config" ]; then config_file=$config; else config_file=$repo/recipes/codec/$config.yaml; fi
exp=${exp:-exp/$(basename "$config" .yaml)}
train_manifest=$data/ljspeech.train.jsonl
valid_manifest=$data/ljspeech.valid.jsonl
test_manifest=$data/ljspeech.test.jsonl

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    if [ -z "$root" ] || [ ! -d "$root" ]; then
        echo "stage 0 needs the corpus: pass --root DIR (got '${root}')." >&2
        echo "Download LJSpeech-1.1.tar.bz2 from https://keithito.com/LJ-Speech-Dataset/," >&2
        echo "extract it and pass --root .../LJSpeech-1.1" >&2
        exit 2
    fi
    echo "stage 0: manifests of $root -> $data"
    audiocodec prepare ljspeech "$root" "$data/ljspeech.jsonl" --split utterance --valid "$n_valid" --test "$n_test" \
        --seed "$seed" --workers "$workers"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    echo "stage 1: train $config_file -> $exp"
    train_args=("$config_file" --run-dir "$exp" --set "task.data.train=$train_manifest"
                --set "task.data.valid=$valid_manifest" --set "trainer.seed=$seed" ${sets[@]+"${sets[@]}"})
    if [ "$ngpu" -gt 1 ]; then
        torchrun --standalone --nproc_per_node "$ngpu" -m audiocodec.train "${train_args[@]}"
    else
        audiocodec train "${train_args[@]}"
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    echo "stage 2: reconstruct $test_manifest -> $exp/decode/test"
    audiocodec eval --manifest "$test_manifest" --model "$exp/codec" --device "$device" \
        --save-audio "$exp/decode/test" --metrics mel_distance --json "$exp/decode/reconstruct.json" --quiet
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    echo "stage 3: score $test_manifest -> $exp/decode/metrics.json"
    audiocodec eval --manifest "$test_manifest" --model "$exp/codec" --device "$device" \
        ${metrics:+--metrics "$metrics"} --json "$exp/decode/metrics.json"
fi
