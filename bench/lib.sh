# bench/lib.sh: helpers for bench/run.sh and bench/stop.sh. Source it, do not run it.
#
# Taken from the shared harness (shared/bench/lib.sh). Every process is started in its own
# session (setsid) so that it and its children (nginx workers) form one process group whose
# id is the PID we record. Stopping signals that group by its id, after checking that the
# recorded PID still belongs to the process we started (its start time is recorded too).

BENCH=${BENCH:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO=${REPO:-$(cd "$BENCH/.." && pwd)}
RUN=${RUN:-$BENCH/run}              # generated configs, logs, pid files, data files (git-ignored)
VENV=${VENV:-$BENCH/.venv}          # made by bench/setup.sh: tproxy (editable) + Twisted
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-/usr/bin/wrk}

PROXY_CPU=${PROXY_CPU:-0}           # the system under test
LOAD_CPU=${LOAD_CPU:-1}             # wrk, curl, the backends
PORT_SHIFT=${PORT_SHIFT:-0}         # added to every port below (to run beside something on them)
BACKEND_PORT=${BACKEND_PORT:-$((19000 + PORT_SHIFT))} # peer i of group "api" is BACKEND_PORT+i
SINK_PORT=${SINK_PORT:-$((18999 + PORT_SHIFT))}       # the upload sink (tools/sink.py)

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

_starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

# group_alive PGID: true while any non-zombie process is in that process group.
group_alive() {
    ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {found = 1} END {exit !found}'
}

# group_pids PGID: the PIDs of the live processes of that process group, one a line.
group_pids() {
    ps -e -o pid=,pgid=,stat= | awk -v g="$1" '$2 == g && $3 !~ /^Z/ {print $1}'
}

# pgid_of NAME: the process group id recorded for NAME (its leader's PID).
pgid_of() { local pid _; read -r pid _ <"$RUN/pids/$1.pid" && echo "$pid"; }

# start_proc NAME CPU CMD...: start CMD pinned to CPU, in its own session; output to logs/NAME.out.
start_proc() {
    local name=$1 cpu=$2; shift 2
    mkdir -p "$RUN/pids" "$RUN/logs"
    setsid taskset -c "$cpu" "$@" >"$RUN/logs/$name.out" 2>&1 </dev/null &
    local pid=$!
    sleep 0.05
    local pgid
    pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
    [ "$pgid" = "$pid" ] || log "warning: $name pid $pid is not its group leader (pgid '$pgid')"
    echo "$pid $(_starttime "$pid")" >"$RUN/pids/$name.pid"
}

# stop_proc NAME: TERM the process group we started, wait up to 10 s, then KILL it.
stop_proc() {
    local name=$1 f="$RUN/pids/$1.pid" pid st
    [ -f "$f" ] || return 0
    read -r pid st <"$f"
    rm -f "$f"
    [ -n "$pid" ] || return 0
    if [ ! -d "/proc/$pid" ] || [ "$(_starttime "$pid")" != "$st" ]; then
        # leader gone (or PID reused): only stragglers of its group may remain
        group_alive "$pid" && [ ! -d "/proc/$pid" ] && kill -TERM -- "-$pid" 2>/dev/null
        return 0
    fi
    kill -TERM -- "-$pid" 2>/dev/null
    local i
    for i in $(seq 100); do group_alive "$pid" || break; sleep 0.1; done
    if group_alive "$pid"; then
        log "warning: $name (pgid $pid) ignored TERM, sending KILL"
        kill -KILL -- "-$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    local f
    for f in "$RUN"/pids/*.pid; do
        [ -e "$f" ] || continue
        stop_proc "$(basename "$f" .pid)"
    done
}

# wait_port PORT [SECONDS]: wait until something accepts TCP connections on 127.0.0.1:PORT.
wait_port() {
    local port=$1 secs=${2:-10} i
    for i in $(seq $((secs * 20))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# wait_started NAME PORT [SECONDS]: like wait_port, but give up at once if the process group
# started as NAME has exited (and show the end of its output).
wait_started() {
    local name=$1 port=$2 secs=${3:-20} pid i
    pid=$(pgid_of "$name")
    for i in $(seq $((secs * 20))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        if ! group_alive "$pid"; then
            log "$name exited before listening on $port; end of $RUN/logs/$name.out:"
            tail -15 "$RUN/logs/$name.out" >&2
            return 1
        fi
        sleep 0.05
    done
    log "$name did not listen on $port within $secs s; end of $RUN/logs/$name.out:"
    tail -15 "$RUN/logs/$name.out" >&2
    return 1
}

# port_free PORT: true if nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# render_conf TEMPLATE DEST NAME PORT: fill @PLACEHOLDERS@ in a config template.
render_conf() {
    sed -e "s|@BENCH@|$BENCH|g" -e "s|@RUN@|$RUN|g" -e "s|@NAME@|$3|g" \
        -e "s|@PORT@|$4|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
        -e "s|@SINK_PORT@|$SINK_PORT|g" "$1" >"$2"
}

# nginx_up NAME CPU TEMPLATE PORT: render TEMPLATE and start nginx with it.
nginx_up() {
    local name=$1 cpu=$2 tpl=$3 port=$4
    mkdir -p "$RUN/conf" "$RUN/tmp" "$RUN/logs"
    render_conf "$tpl" "$RUN/conf/$name.conf" "$name" "$port"
    port_free "$port" || die "port $port is already in use (stale run? try bench/stop.sh)"
    "$NGINX" -t -q -p "$RUN" -e "$RUN/logs/$name.error.log" -c "$RUN/conf/$name.conf" \
        || die "nginx -t failed for $name"
    start_proc "$name" "$cpu" "$NGINX" -p "$RUN" -e "$RUN/logs/$name.error.log" -c "$RUN/conf/$name.conf"
    wait_port "$port" || die "$name did not start listening on $port (see $RUN/logs/$name.*)"
}

# run_wrk URL SECONDS CONNS OUTFILE [extra wrk args...]: one bounded wrk run on LOAD_CPU.
# Output: wrk's text plus one "WRKJSON {...}" line written by tools/wrk_json.lua.
run_wrk() {
    local url=$1 secs=$2 conns=$3 out=$4; shift 4
    timeout -k 5 $((secs + 30)) taskset -c "$LOAD_CPU" "$WRK" -t1 -c"$conns" -d"${secs}s" \
        --latency -s "$BENCH/tools/wrk_json.lua" "$@" "$url" >"$out" 2>&1
}

# cpu_snap: "<busy> <total>" jiffies of PROXY_CPU, then of LOAD_CPU (steal counts as not busy).
cpu_snap() {
    awk -v a="cpu$PROXY_CPU" -v b="cpu$LOAD_CPU" '
        $1 == a || $1 == b { t = 0; for (i = 2; i <= 9; i++) t += $i; s[$1] = (t - $5 - $6 - $9) " " t }
        END { print s[a], s[b] }' /proc/stat
}
busy_pct() { # BEFORE AFTER FIELD(1=proxy,2=load)
    echo "$1 $2" | awk -v f="$3" '{ i = 2 * f - 1; db = $(i + 4) - $i; dt = $(i + 5) - $(i + 1);
        printf "%.1f", (dt > 0 ? 100 * db / dt : 0) }'
}

# _proc_stat_sum PGID AWK_EXPR: AWK_EXPR over the fields of /proc/PID/stat after
# the command name ($12 utime, $13 stime), summed over the live processes of a group.
_proc_stat_sum() {
    local p sum=0 t
    for p in $(group_pids "$1"); do
        t=$(awk '{sub(/^.*\) /, ""); print '"$2"'}' "/proc/$p/stat" 2>/dev/null) || t=0
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}

# proc_ticks PGID: user+system CPU clock ticks used so far by the live processes of a group.
proc_ticks() { _proc_stat_sum "$1" '$12 + $13'; }

# proc_sys_ticks PGID: the system (kernel) part of proc_ticks (stime; the rest is utime).
proc_sys_ticks() { _proc_stat_sum "$1" '$13'; }
