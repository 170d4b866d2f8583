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

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../utils/parse_options.sh"

cd "$here"
repo=$(cd ../../.. && pwd)
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

. "$repo/egs/utils/codec_stages.sh"
