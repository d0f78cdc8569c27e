#!/usr/bin/env bash
# bench/stop.sh: stop whatever an interrupted bench/run.sh left running. Only processes whose
# PID and start time were recorded in bench/run/pids/ are signalled (their process groups).
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$BENCH/lib.sh"
stop_all
