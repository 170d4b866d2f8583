#!/usr/bin/env bash
# Semantic codec recipe (SpeechTokenizer / DM-Codec) on the offline mini corpus: its espeak-ng speech clips
# (transcripts known), 24 kHz, read at the codec's 16 kHz.
#
#   ./run.sh --speech_teacher models/hubert-base-ls960 --text_teacher models/bert-base-uncased   # DM-Codec
#   ./run.sh --config speechtokenizer_16k --speech_teacher models/hubert-base-ls960               # HuBERT only
#   ./run.sh --scale toy --speech_teacher_config '{"hidden_size": 16, ...}' \
#            --text_teacher_config '{"hidden_size": 16, ...}' --set trainer.max_steps=20          # a smoke run
#
# Stages (each one command of the audiocodec package; run from any folder, paths are relative to this one):
#   0  build the corpus into $data (egs/mini/local/make_corpus.py) and keep its transcribed (speech) clips:
#      $data/speech/{train,valid,test}.jsonl
#   1  teacher features of the train and valid clips into $feats/<teacher> (python -m audiocodec.semantic
#      features), for each teacher the config distils from (speech: HuBERT / wav2vec2, text: BERT); run it
#      again to resume
#   2  train recipes/codec/$config.yaml into $exp with those features (run it again to resume; torchrun when
#      --ngpu > 1); the codec is exported to $exp/codec at every checkpoint
#   3  reconstruct the held-out test clips with $exp/codec into $exp/decode/test/ and score them
#      (PESQ, STOI, SI-SDR, mel / STFT distance, V/UV F1, codebook use, bitrate) into $exp/decode/metrics.json
#
# Options:
#   --stage N --stop_stage M        stages to run (default 0 .. 3)
#   --config NAME|FILE              a recipe of recipes/codec (without .yaml) or a YAML file
#                                   (default speechtokenizer_dm_codec: speech + text teachers)
#   --scale toy|default|large       mini corpus size (default: default)
#   --data DIR                      corpus folder (default: data/mini_<scale>)
#   --feats DIR                     teacher feature folder (default: feats/mini_<scale>)
#   --exp DIR                       run folder (default: exp/<config>_<scale>)
#   --speech_teacher DIR            a local HuBERT / wav2vec2 / WavLM folder (save_pretrained layout)
#   --text_teacher DIR              a local BERT folder (model + tokenizer)
#   --speech_teacher_config JSON    instead: a random speech teacher (transformers HubertConfig arguments)
#   --text_teacher_config JSON      instead: a random text teacher (BertConfig arguments; character vocabulary)
#   --speech_layer L --text_layer L teacher hidden states: avg (default), an index, or indices "3,4,5"
#   --nj N                          feature processes per teacher (default 1)
#   --set KEY=VALUE                 training config override, repeatable (e.g. --set trainer.batch_size=8)
#   --ngpu N                        GPUs for training (default 1)
#   --seed N                        corpus, teacher and training seed (default 0)
#   --device DEV                    device of stages 1 and 3 (default auto)
#   --metrics LIST                  metrics of stage 3, comma-separated (default: audiocodec eval's)
set -euo pipefail

stage=0
stop_stage=3
config=speechtokenizer_dm_codec
scale=default
data=
feats=
exp=
speech_teacher=
text_teacher=
speech_teacher_config=
text_teacher_config=
speech_layer=avg
text_layer=avg
nj=1
ngpu=1
seed=0
device=auto
metrics=
sets=()

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../utils/parse_options.sh"

cd "$here"
repo=$(cd ../../.. && pwd)
name=$(basename "$config" .yaml)
if [ -f "$config" ]; then config_file=$config; else config_file=$repo/recipes/codec/$config.yaml; fi
data=${data:-data/mini_${scale}}
feats=${feats:-feats/mini_${scale}}
exp=${exp:-exp/${name}_${scale}}
train_manifest=$data/speech/train.jsonl
valid_manifest=$data/speech/valid.jsonl
test_manifest=$data/speech/test.jsonl

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    echo "stage 0: mini corpus ($scale) -> $data, transcribed clips -> $data/speech"
    python3 "$repo/egs/mini/local/make_corpus.py" "$data" --scale "$scale" --seed "$seed"
    for split in train valid test; do
        python3 -m audiocodec.semantic transcribed "$data/$split.jsonl" "$data/speech/$split.jsonl"
    done
fi

# the teachers whose features the config reads (task.distillation.features, after the --set overrides)
config_teachers() {
    python3 - "$config_file" ${sets[@]+"${sets[@]}"} <<'EOF'
import sys
from audiocodec.config import load_yaml
from audiocodec.errors import AudioCodecError
from audiocodec.train import resolve_config
try:
    cfg = resolve_config(load_yaml(sys.argv[1]), sys.argv[3::2])
except (AudioCodecError, OSError) as e:
    sys.exit(f"error: {e}")
print(" ".join((cfg["task"].get("distillation") or {}).get("features") or {}))
EOF
}
teachers=
if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 1 ]; then
    teachers=$(config_teachers)
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    if [ -z "$teachers" ]; then
        echo "stage 1: $config_file reads no teacher features (task.distillation.features)" >&2
        exit 2
    fi
    for teacher in $teachers; do
        case "$teacher" in
            speech) path=$speech_teacher; json=$speech_teacher_config; layer=$speech_layer ;;
            text) path=$text_teacher; json=$text_teacher_config; layer=$text_layer ;;
            *) echo "stage 1: teacher '$teacher' of $config_file is neither speech nor text" >&2; exit 2 ;;
        esac
        if [ -n "$path" ]; then
            source_args=(--teacher-path "$path")
        elif [ -n "$json" ]; then
            source_args=(--teacher-config "$json" --seed "$seed")
        else
            echo "stage 1: $config_file distils from a $teacher teacher: pass --${teacher}_teacher DIR (a local" >&2
            echo "model folder) or --${teacher}_teacher_config JSON (random weights, for smoke runs)" >&2
            exit 2
        fi
        echo "stage 1: $teacher teacher features of $train_manifest $valid_manifest -> $feats/$teacher"
        pids=()
        for ((rank = 0; rank < nj; rank++)); do
            python3 -m audiocodec.semantic features "$train_manifest" "$valid_manifest" "$feats/$teacher" \
                --teacher "$teacher" "${source_args[@]}" --layer "$layer" --device "$device" \
                --rank "$rank" --world-size "$nj" --quiet &
            pids+=($!)
        done
        status=0
        for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
        if [ "$status" -ne 0 ]; then
            echo "stage 1: features of some clips failed (see $feats/$teacher/failed*.jsonl): run the stage again" >&2
            echo "to retry them, or train without them (--set task.distillation.missing=drop)" >&2
            exit "$status"
        fi
    done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    echo "stage 2: train $config_file -> $exp"
    train_args=("$config_file" --run-dir "$exp" --set "task.data.train=$train_manifest"
                --set "task.data.valid=$valid_manifest" --set "trainer.seed=$seed")
    for teacher in $teachers; do
        train_args+=(--set "task.distillation.features.$teacher=$feats/$teacher")
    done
    train_args+=(${sets[@]+"${sets[@]}"})
    if [ "$ngpu" -gt 1 ]; then
        torchrun --standalone --nproc_per_node "$ngpu" -m audiocodec.train "${train_args[@]}"
    else
        audiocodec train "${train_args[@]}"
    fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    echo "stage 3: reconstruct and score $test_manifest -> $exp/decode"
    audiocodec eval --manifest "$test_manifest" --model "$exp/codec" --device "$device" \
        --save-audio "$exp/decode/test" ${metrics:+--metrics "$metrics"} --json "$exp/decode/metrics.json"
fi
