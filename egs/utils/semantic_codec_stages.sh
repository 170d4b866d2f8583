# Stages 1-3 shared by every semantic-codec recipe, sourced by egs/*/semantic_codec/run.sh once their stage 0
# has written the manifests. Needs: stage stop_stage config_file exp feats train_manifest valid_manifest
# test_manifest seed ngpu nj device metrics sets speech_teacher text_teacher speech_teacher_config
# text_teacher_config speech_layer text_layer (see any egs/*/semantic_codec/run.sh for their meaning).

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
