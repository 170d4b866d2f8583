#!/usr/bin/env bash
# Text-to-song recipe (SongGen layout) on the offline mini song corpus: fluidsynth accompaniment from generated
# MIDI, espeak-ng voices singing generated lyrics on the melody, stems kept separate, descriptions from the
# metadata (genre, mood, instruments, tempo, key, voice).
#
#   ./run.sh                                        # every stage: default corpus (300 songs), recipes/song/mini.yaml
#   ./run.sh --scale toy --set trainer.max_steps=20 --set trainer.val_every=20   # a quick smoke run
#
# Stages (paths are relative to this folder):
#   0  build the song corpus into $data (egs/mini/local/make_song_corpus.py; installs espeak-ng / fluidsynth
#      when missing): {train,valid,test}.jsonl (mixture, with lyrics + description), .vocal.jsonl and
#      .accompaniment.jsonl (the stems, same ids)
#   1  encode the train / valid mixtures and stems with $codec (audiocodec extract-tokens) into the layout
#      song_lm reads: $tokens/<split> (mixture), $tokens/<split>/vocal, $tokens/<split>/accompaniment
#      (run again to resume)
#   2  train recipes/song/$config.yaml into $exp (run it again to resume; torchrun when --ngpu > 1);
#      the model is exported to $exp/song at every checkpoint
#   3  sing the held-out test lyrics + descriptions (as long as each reference song; the voice prompt is the
#      singer's voice from another song, see --voice) into $exp/generate: <id>.wav, and for dual-track modes
#      <id>.vocal.wav, <id>.accompaniment.wav; metrics.json: duration, RMS of the mixture and of each stem,
#      log-mel distance to the reference mixture (and stems) of the same test song
#
# Options:
#   --stage N --stop_stage M   stages to run (default 0 .. 3)
#   --config NAME|FILE         a recipe of recipes/song (without .yaml) or a YAML file (default mini)
#   --scale toy|default|large  song corpus size (default: default)
#   --codec M                  codec of the tokens (default: the embedded wavtokenizer-75-small-mini)
#   --data DIR --tokens DIR --exp DIR   corpus, token and run folders
#   --set KEY=VALUE            training config override, repeatable
#   --ngpu N                   GPUs for stages 1-2 (default 1)
#   --nj N                     corpus rendering workers (default: CPU count, at most 8)
#   --seed N                   corpus, training and sampling seed (default 0)
#   --device DEV               device of stages 1 and 3 (default auto)
#   --voice other|self|none    voice prompts of stage 3 (default other: the same singer in another song)
#   --cfg_scale X              classifier-free guidance of stage 3 (default 3.0)
#   --limit N                  sing only the first N test songs (default all)
set -euo pipefail

stage=0
stop_stage=3
config=mini
scale=default
codec=wavtokenizer-75-small-mini
data=
tokens=
exp=
ngpu=1
nj=
seed=0
device=auto
voice=other
cfg_scale=3.0
limit=
sets=()

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../utils/parse_options.sh"

cd "$here"
repo=$(cd ../../.. && pwd)
name=$(basename "$config" .yaml)
if [ -f "$config" ]; then config_file=$config; else config_file=$repo/recipes/song/$config.yaml; fi
[ -f "$config_file" ] || { echo "$0: no song recipe $config_file" >&2; exit 2; }
case "$scale" in
    toy|default|large) ;;
    *) echo "$0: --scale must be toy, default or large, got $scale" >&2; exit 2 ;;
esac
case "$voice" in other|self|none) ;; *) echo "$0: --voice must be other, self or none, got $voice" >&2; exit 2;; esac
data=${data:-data/songs_${scale}}
tokens=${tokens:-tokens/songs_${scale}}
exp=${exp:-exp/song_${name}_${scale}}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    echo "stage 0: song corpus ($scale) -> $data"
    python3 "$repo/egs/mini/local/make_song_corpus.py" "$data" --scale "$scale" --seed "$seed" \
        ${nj:+--workers "$nj"}
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    echo "stage 1: codec tokens ($codec) of the train / valid mixtures and stems -> $tokens"
    if [ "$ngpu" -gt 1 ]; then
        for split in train valid; do
            for track in mixture vocal accompaniment; do
                if [ "$track" = mixture ]; then
                    manifest=$data/$split.jsonl; out=$tokens/$split
                else
                    manifest=$data/$split.$track.jsonl; out=$tokens/$split/$track
                fi
                torchrun --standalone --nproc_per_node "$ngpu" -m audiocodec extract-tokens "$manifest" \
                    -o "$out" --model "$codec" -q
            done
        done
    else   # the six `audiocodec extract-tokens` of the branch above, in one process (the codec loaded once)
        python3 -c 'import sys, logging
from audiocodec.data.song_synth import extract_song_tokens
logging.basicConfig(level=logging.INFO, format="%(message)s")
extract_song_tokens(sys.argv[1], sys.argv[2], codec=sys.argv[3], device=sys.argv[4])' \
            "$data" "$tokens" "$codec" "$device"
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    echo "stage 2: train $config_file -> $exp"
    train_args=("$config_file" --run-dir "$exp" --set "task.train=$tokens/train" --set "task.valid=$tokens/valid"
                --set "task.codec=$codec" --set "trainer.seed=$seed" ${sets[@]+"${sets[@]}"})
    if [ "$ngpu" -gt 1 ]; then
        torchrun --standalone --nproc_per_node "$ngpu" -m audiocodec.train "${train_args[@]}"
    else
        audiocodec train "${train_args[@]}"
    fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    echo "stage 3: sing $data/test.jsonl with $exp/song -> $exp/generate (wavs, stems, metrics.json)"
    [ -d "$exp/song" ] || [ -f "$exp/song" ] || { echo "$0: no trained model in $exp/song (run stage 2)" >&2; exit 1; }
    python3 - "$data/test.jsonl" "$exp/song" "$exp/generate" "$device" "$voice" "$cfg_scale" "$seed" "$limit" <<'EOF'
import json, sys
import torch
from audiocodec.data.song_synth import generate_test_songs
manifest, model, out, device, voice, cfg, seed, limit = sys.argv[1:9]
if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
result = generate_test_songs(manifest, model, out, device=device, voice=voice, cfg_scale=float(cfg), seed=int(seed),
                             limit=int(limit) if limit else None)
print(json.dumps(result["summary"], indent=1))
EOF
fi
