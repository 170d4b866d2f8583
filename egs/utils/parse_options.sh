# Sourced by egs/*/*/run.sh after their defaults: turns `--name value` into the shell variable `name`
# (dashes become underscores; only variables the script already defines), `--set KEY=VALUE` (repeatable)
# into the array `sets`, and -h / --help into the script's header comment.
usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --*)
            opt=${1#--}; opt=${opt//-/_}
            [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 2; }
            if [ "$opt" = set ]; then
                sets+=(--set "$2")
            elif [[ $opt =~ ^[a-z][a-z0-9_]*$ ]] && declare -p "$opt" >/dev/null 2>&1; then
                printf -v "$opt" '%s' "$2"
            else
                echo "$0: unknown option $1" >&2; usage >&2; exit 2
            fi
            shift 2 ;;
        *) echo "$0: unexpected argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
