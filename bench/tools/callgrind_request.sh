#!/bin/bash
# Instructions per proxied request of bench/micro_request.py, counted by
# callgrind (independent of the machine's load; see bench/README.md,
# "Instructions per request (callgrind)").
#
#   bash bench/tools/callgrind_request.sh [micro_request.py options, e.g. --access-log]
#
# Runs micro_request.py --count twice under valgrind --tool=callgrind, with
# N1 and N2 requests (default 2000 and 4000; the environment sets them), and
# prints (Ir(N2) - Ir(N1)) / (N2 - N1): the start-up (imports, configuration,
# warm-up) cancels out.  PYTHON chooses the interpreter (default: python3).
# PYTHONHASHSEED is 0 unless set: dict and set layouts, and so the count,
# are then the same from run to run.
# Needs valgrind (apt-get install -y valgrind).  Output files: $OUT (a
# temporary directory unless set), removed at the end unless KEEP=1.
set -eu
PYTHON=${PYTHON:-python3}
N1=${N1:-2000}
N2=${N2:-4000}
export PYTHONHASHSEED=${PYTHONHASHSEED:-0}
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d)}
for n in "$N1" "$N2"; do
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$n.out" \
        "$PYTHON" "$HERE/micro_request.py" --count -n "$n" "$@" >/dev/null 2>"$OUT/valgrind.$n.log" &
done
wait
a=$(awk '/^totals:/ {print $2; exit}' "$OUT/callgrind.$N1.out")
b=$(awk '/^totals:/ {print $2; exit}' "$OUT/callgrind.$N2.out")
echo "$(( (b - a) / (N2 - N1) )) instructions per request ($PYTHON, $*; N=$N1: $a, N=$N2: $b)"
[ "${KEEP:-0}" = 1 ] || rm -rf "$OUT"
