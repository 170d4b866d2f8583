# Stages 1-4 shared by every TTS recipe, sourced by egs/*/tts/run.sh once their stage 0 has written the
# manifests. Needs: stage stop_stage repo config exp tokens codec train_manifest valid_manifest test_manifest
#                   seed ngpu device sets (see any egs/*/tts/run.sh for their meaning).
if [ -f "$config" ]; then config_file=$config; else config_file=$repo/recipes/tts/$config.yaml; fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    echo "stage 1: codec tokens ($codec) of the train / valid manifests -> $tokens"
    for split in train valid; do
        manifest_var=${split}_manifest
        if [ "$ngpu" -gt 1 ]; then
            torchrun --standalone --nproc_per_node "$ngpu" -m audiocodec extract-tokens "${!manifest_var}" \
                -o "$tokens/$split" --model "$codec" -q
        else
            audiocodec extract-tokens "${!manifest_var}" -o "$tokens/$split" --model "$codec" --device "$device" -q
        fi
    done
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
    echo "stage 3: synthesise and score $test_manifest -> $exp/eval (MCD-DTW, duration ratio; WER with --asr_model)"
    audiocodec eval-tts "$test_manifest" --model "$exp/tts" --device "$device" --out "$exp/eval" \
        ${asr_model:+--asr-model "$asr_model"}
fi
