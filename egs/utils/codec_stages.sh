# Stages 1-3 shared by every codec recipe, sourced by egs/*/codec/run.sh once their stage 0 has run.
# Needs: stage stop_stage repo config exp train_manifest valid_manifest test_manifest seed ngpu device
#        metrics sets (see any egs/*/codec/run.sh for their meaning).
if [ -f "$config" ]; then config_file=$config; else config_file=$repo/recipes/codec/$config.yaml; fi

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
