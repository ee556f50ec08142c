#!/usr/bin/env bash
# Elastic training on this machine, step by step (docs/elastic.md): starts 3 workers of
# `train.py --elastic` under elastic horovodrun (one slot on each of three local host names),
# kills one of them with SIGKILL in the middle of an epoch, lets the other two roll back to the
# last commit and go on, then lists the killed host again so that Horovod starts a new worker
# there, which receives the state and joins. Prints what happens as it happens, then a summary
# from the report.
#
#   scripts/elastic_demo.sh [OUT_DIR] [more train.py flags]
#
# Environment: PYTHON (default: python), HOROVODRUN (default: the horovodrun next to PYTHON).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-runs/elastic_demo}
[ $# -gt 0 ] && shift
PY=${PYTHON:-python}
PY=$(command -v "$PY")
HVD=${HOROVODRUN:-$(dirname "$PY")/horovodrun}
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/train" "$OUT/hosts" "$OUT/blacklist" "$OUT/job.log"
HOSTS=(localhost 127.0.0.1 "$(hostname)")  # distinct names: a failure blacklists a whole host
VICTIM=127.0.0.1
export IAPDCNN_ELASTIC_HOSTS=$OUT/hosts IAPDCNN_ELASTIC_BLACKLIST=$OUT/blacklist

say() { echo "[demo $(date +%T)] $*"; }
write_hosts() {
    printf '%s:1\n' "$@" >"$OUT/hosts.tmp"
    mv "$OUT/hosts.tmp" "$OUT/hosts"
}
# waits (up to $2 s) for a line of the job's output matching $1 after line $3; prints its number
wait_line() {
    local pattern=$1 limit=$2 after=${3:-0} n
    for _ in $(seq $((limit * 5))); do
        n=$(tail -n +$((after + 1)) "$OUT/job.log" | grep -n -m1 -E "$pattern" | cut -d: -f1 || true)
        if [ -n "$n" ]; then
            echo $((after + n))
            return 0
        fi
        if ! kill -0 "$JOB" 2>/dev/null; then break; fi
        sleep 0.2
    done
    say "gave up waiting for: $pattern" >&2
    tail -n 30 "$OUT/job.log" >&2
    exit 1
}
# the job's elastic and epoch lines, rank prefixes stripped
show() { sed -n "$1,$2p" "$OUT/job.log" | grep -E "elastic:|^.*epoch [0-9]+/" |
    sed -E 's/^\[[0-9]+\]<std(out|err)>://' | sed 's/^/    | /' || true; }

write_hosts "${HOSTS[@]}"
say "starting 3 workers, one on each of: ${HOSTS[*]}"
"$HVD" -np 3 --min-np 2 --max-np 3 --host-discovery-script "$ROOT/scripts/elastic_discover.sh" \
    --network-interface lo --gloo --blacklist-cooldown-range 2 5 \
    "$PY" "$ROOT/train.py" --dataset synthetic --width 4 --batch-size 16 --threads 1 \
    --no-progress --bn-momentum 0.9 --eval-limit 512 --epochs 3 --steps-per-epoch 10 \
    --elastic --commit-every 3 --inject-fault 0:straggler:0 --straggler-seconds 0.4 \
    --out "$OUT/train" "$@" >"$OUT/job.log" 2>&1 &
JOB=$!
trap 'kill "$JOB" 2>/dev/null || true' EXIT

n=$(wait_line "elastic: commit 1 at step" 180)
show 1 "$n"
read -r pid rank <"$OUT/train/elastic_pids/$VICTIM"
say "killing the worker on host $VICTIM (pid $pid, rank $rank) with SIGKILL, mid-epoch;"
say "the discovery script stops listing $VICTIM"
write_hosts "${HOSTS[@]/$VICTIM/}"
sed -i '/^:1$/d' "$OUT/hosts"
kill -9 "$pid"
m=$(wait_line "elastic: 2 ranks on" 120 "$n")
show $((n + 1)) "$m"
say "the two survivors rolled back to their last commit and go on; in 3 s $VICTIM is listed again"
sleep 3
write_hosts "${HOSTS[@]}"
k=$(wait_line "elastic: 3 ranks on" 120 "$m")
show $((m + 1)) "$k"
say "a new worker on $VICTIM (pid $(cut -d' ' -f1 "$OUT/train/elastic_pids/$VICTIM")) got the state and joined"
set +e
wait "$JOB"
rc=$?
set -e
trap - EXIT
show $((k + 1)) '$'
say "horovodrun exited with status $rc"
"$PY" - "$OUT/train/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
e = r["elastic"]
print(f"[demo] test accuracy {r['test_accuracy']:.4f}, {r['ranks']} ranks at the end")
print(f"[demo] steps trained {e['steps_done']} of {e['steps_expected']} (optimizer steps "
      f"{e['optimizer_steps']}), each once and in order: {e['steps_in_order']}; "
      f"{e['commits']} commits")
for x in e["resets"]:
    print(f"[demo] reset: {x['cause']}: {x['size_before']} -> {x['size_after']} ranks at step "
          f"{x['at_step']}, {x['lost_steps']} steps rolled back")
EOF
echo "[demo] full output: $OUT/job.log; report: $OUT/train/report.json"
exit "$rc"
