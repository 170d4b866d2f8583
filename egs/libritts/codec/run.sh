#!/usr/bin/env bash
# LibriTTS (or LibriTTS-R) codec recipe: 585 h of read English, 24 kHz; WavTokenizer's training set.
#
# Get LibriTTS from https://www.openslr.org/60/ or LibriTTS-R from https://www.openslr.org/141/; extract the
# subsets (train-clean-100.tar.gz ...) into one folder. Tests on test-clean, as the WavTokenizer paper.
#
#   ./run.sh --root /data/LibriTTS_R --corpus libritts_r                     # every stage
#   ./run.sh --stage 1 --stop_stage 1 --ngpu 8 --config wavtokenizer_75
#
# Stages (each one command of the audiocodec package; paths are relative to this folder):
#   0  write jsonl manifests of the local corpus at --root into $data
#      (official subsets: train-*, dev-clean, test-clean); nothing is downloaded
#   1  train recipes/codec/$config.yaml into $exp (run it again to resume; torchrun when --ngpu > 1);
#      the codec is exported to $exp/codec at every checkpoint
#   2  reconstruct the test set with $exp/codec into $exp/decode/test/
#   3  score the test set (PESQ, STOI, SI-SDR, mel / STFT distance, V/UV F1, codebook use, bitrate)
#      into $exp/decode/metrics.json
#
# Options:
#   --root DIR                 the extracted corpus (needed by stage 0)
#   --stage N --stop_stage M   stages to run (default 0 .. 3)
#   --config NAME|FILE         a recipe of recipes/codec (without .yaml) or a YAML file (default wavtokenizer_75)
#   --data DIR                 manifest folder (default data)
#   --exp DIR                  run folder (default exp/<config>)
#   --set KEY=VALUE            training config override, repeatable (e.g. --set trainer.batch_size=16)
#   --ngpu N                   GPUs for training (default 1)
#   --seed N                   split and training seed (default 0)
#   --device DEV               device of stages 2-3 (default auto)
#   --metrics LIST             metrics of stage 3, comma-separated (default: audiocodec eval's)
#   --workers N                threads reading audio headers in stage 0 (default 8)
#   --corpus libritts|libritts_r  layout to read (default libritts; the two are the same)
#   --train_subsets "A B"      training subsets (default "train-clean-100 train-clean-360 train-other-500")
#   --valid_subsets "A"        validation subsets (default dev-clean)
#   --test_subsets "A"         test subsets (default test-clean)
set -euo pipefail

root=
stage=0
stop_stage=3
config=wavtokenizer_75
data=data
exp=
ngpu=1
seed=0
device=auto
metrics=
workers=8
corpus=libritts
train_subsets="train-clean-100 train-clean-360 train-other-500"
valid_subsets=dev-clean
test_subsets=test-clean
sets=()

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../utils/parse_options.sh"

cd "$here"
repo=$(cd ../../.. && pwd)
exp=${exp:-exp/$(basename "$config" .yaml)}
train_manifest=$data/train.jsonl
valid_manifest=$data/valid.jsonl
test_manifest=$data/test.jsonl

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    if [ -z "$root" ] || [ ! -d "$root" ]; then
        echo "stage 0 needs the corpus: pass --root DIR (got '${root}')." >&2
        echo "Download the subsets of LibriTTS (https://www.openslr.org/60/) or LibriTTS-R" >&2
        echo "(https://www.openslr.org/141/), extract them into one folder and pass --root DIR" >&2
        echo "(and --corpus libritts_r for LibriTTS-R)." >&2
        exit 2
    fi
    echo "stage 0: manifests of $root -> $data"
    audiocodec prepare "$corpus" "$root" "$train_manifest" --subsets $train_subsets --workers "$workers"
    audiocodec prepare "$corpus" "$root" "$valid_manifest" --subsets $valid_subsets --workers "$workers"
    audiocodec prepare "$corpus" "$root" "$test_manifest" --subsets $test_subsets --workers "$workers"
fi

. "$repo/egs/utils/codec_stages.sh"
