# Sourced by the scripts of benchmarks/device/ on a lent GPU machine: installs the carried wheels (.whl/)
# into /tmp/site, puts them and the repository on PYTHONPATH, and sets `launch` to the training command
# (python -m audiocodec.train, or torchrun over $NGPU GPUs when NGPU > 1).
# WHEELS=none skips the install (a dry run of a device script on a machine that has the packages)
if [ "${WHEELS:-.whl}" != none ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "${WHEELS:-.whl}"/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
launch=(python3 -m audiocodec.train)
[ "${NGPU:-1}" -gt 1 ] && launch=(torchrun --standalone --nproc_per_node "$NGPU" -m audiocodec.train)
