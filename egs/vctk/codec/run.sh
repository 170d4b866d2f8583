#!/usr/bin/env bash
# VCTK codec recipe: 110 English speakers, 44 h, 48 kHz (resampled to the codec's rate).
#
# Get VCTK-Corpus-0.92 from https://datashare.ed.ac.uk/handle/10283/3443 and extract it (wav48_silence_trimmed/, txt/).
#
#   ./run.sh --root /data/VCTK-Corpus-0.92                     # every stage
#   ./run.sh --stage 1 --stop_stage 1 --ngpu 8 --config wavtokenizer_75
#
# Stages (each one command of the audiocodec package; paths are relative to this folder):
#   0  write jsonl manifests of the local corpus at --root into $data
#      (split by speaker: --n_valid / --n_test speakers unseen in training); nothing is downloaded
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
#   --n_valid N --n_test N     speakers held out for validation / test (default 2 / 4)
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
n_valid=2
n_test=4
sets=()

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../utils/parse_options.sh"

cd "$here"
repo=$(cd ../../.. && pwd)
exp=${exp:-exp/$(basename "$config" .yaml)}
train_manifest=$data/vctk.train.jsonl
valid_manifest=$data/vctk.valid.jsonl
test_manifest=$data/vctk.test.jsonl

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    if [ -z "$root" ] || [ ! -d "$root" ]; then
        echo "stage 0 needs the corpus: pass --root DIR (got '${root}')." >&2
        echo "Download VCTK-Corpus-0.92.zip from https://datashare.ed.ac.uk/handle/10283/3443," >&2
        echo "extract it and pass --root .../VCTK-Corpus-0.92" >&2
        exit 2
    fi
    echo "stage 0: manifests of $root -> $data"
    audiocodec prepare vctk "$root" "$data/vctk.jsonl" --split speaker --valid "$n_valid" --test "$n_test" --min-duration 1.0 \
        --seed "$seed" --workers "$workers"
fi

. "$repo/egs/utils/codec_stages.sh"
