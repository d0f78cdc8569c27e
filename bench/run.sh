#!/usr/bin/env bash
# bench/run.sh: tproxy's benchmark, the one command (see bench/README.md).
#
# Starts a local backend (nginx on LOAD_CPU) and every system to measure (each one process
# pinned to PROXY_CPU), measures them with wrk (on LOAD_CPU) in interleaved rounds
# (a b c, a b c, ...), moves 1 GiB through the proxies with curl while sampling their memory,
# stops everything it started, writes results/<timestamp>/{table.md,runs.jsonl,...} and
# prints the table. Needs bench/setup.sh once.
#
# Knobs (environment; see README.md): SMOKE=1, ROUNDS (3), DURATION (8 s), WARMUP (1 s,
# 3 s on PyPy), CONNS (32), SCENARIOS ("peers groups plugins log close body1m gib micro"),
# BASELINES ("nginx twisted"), PROXY_CPU (0), LOAD_CPU (1), PYTHON (interpreter of tproxy),
# TWISTED_PYTHON, TWISTD_ARGS, TPROXY_CONFIG_JSON, GIB_ROUNDS (1), GIB_BYTES (1 GiB), TTL,
# MICRO_SECONDS (1),
# SYSTEMS / CLOSE_SYSTEMS / BODY_SYSTEMS / GIB_SYSTEMS (override what SCENARIOS picks),
# PORT_SHIFT (0), RESULTS (output directory).
set -u -o pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$BENCH/lib.sh"

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-1}
    WARMUP=${WARMUP:-0}
    SCENARIOS=${SCENARIOS:-smoke}
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
SCENARIOS=${SCENARIOS:-"peers groups plugins log close body1m gib micro"}
MICRO_SECONDS=${MICRO_SECONDS:-1}
BASELINES=${BASELINES:-"nginx twisted"}
GIB_ROUNDS=${GIB_ROUNDS:-1}
GIB_BYTES=${GIB_BYTES:-1073741824}
TTL=${TTL:-86400}                       # registrations outlive the run: no heartbeats needed
BACKEND_PORTS_PER_PROC=${BACKEND_PORTS_PER_PROC:-2500}
TWISTD_ARGS=${TWISTD_ARGS:-}            # e.g. "-r epoll", placed before "tproxy"
TPROXY_CONFIG_JSON=${TPROXY_CONFIG_JSON:-}  # a JSON object merged into every tproxy config
HOST_PY=${HOST_PY:-python3}             # runs the stdlib-only tools (regctl, transfer, sink)
if [ -x "$VENV/bin/python" ]; then DEFAULT_PY=$VENV/bin/python; else DEFAULT_PY=$(command -v python3); fi
PYTHON=${PYTHON:-$DEFAULT_PY}           # the interpreter tproxy runs on
TWISTED_PYTHON=${TWISTED_PYTHON:-$DEFAULT_PY}
PY_IMPL=$("$PYTHON" -c 'import platform; print(platform.python_implementation())' 2>/dev/null) \
    || die "PYTHON=$PYTHON does not run"
if [ "$PY_IMPL" = PyPy ]; then
    WARMUP=${WARMUP:-3}
    # the GC settings README.md recommends for tproxy on PyPy (set them empty for PyPy's defaults)
    export PYPY_GC_NURSERY=${PYPY_GC_NURSERY-16MB}
    export PYPY_GC_INCREMENT_STEP=${PYPY_GC_INCREMENT_STEP-4MB}
else
    WARMUP=${WARMUP:-1}
fi
RESULTS=${RESULTS:-$BENCH/results/$(date +%Y%m%d-%H%M%S)}

# ---- the systems ---------------------------------------------------------------------------
# tproxy variants: NAME -> "PORT PEERS GROUPS PLUGINS [EXTRA]" (admin on PORT+1; EXTRA: more
# plugin names, comma-separated, after registry, router, least_conn and the no-op plugins)
declare -A TP DESC
TP[tproxy_n1]="18500 1 0 0"
TP[tproxy_n100]="18502 100 0 0"
TP[tproxy_n1000]="18504 1000 0 0"
TP[tproxy_n10000]="18506 10000 0 0"
TP[tproxy_g1000]="18508 1 1000 0"
TP[tproxy_p5]="18510 1 0 5"
TP[tproxy_p20]="18512 1 0 20"
TP[tproxy_log]="18514 1 0 0 access_log"
TP[tproxy_pure]="18516 1 0 0"
# environment a tproxy variant runs with (beside PYTHONPATH)
declare -A TENV
TENV[tproxy_pure]="TPROXY_COMPILED=0"
DESC[direct]="no proxy: wrk -> backend"
DESC[nginx]="nginx proxy_pass, upstream keepalive 64"
DESC[twisted]="twisted.web.proxy.ReverseProxyResource, stock"
DESC[tproxy_n1]="tproxy, 1 peer in group api"
DESC[tproxy_n100]="tproxy, 100 peers"
DESC[tproxy_n1000]="tproxy, 1,000 peers"
DESC[tproxy_n10000]="tproxy, 10,000 peers"
DESC[tproxy_g1000]="tproxy, 1 peer, 1,000 other route groups"
DESC[tproxy_p5]="tproxy, 1 peer, 5 no-op plugins"
DESC[tproxy_p20]="tproxy, 1 peer, 20 no-op plugins"
DESC[tproxy_log]="tproxy, 1 peer, the default plugins (access_log to stdout, a file here)"
DESC[tproxy_pure]="tproxy, 1 peer, the hot modules' Python source (TPROXY_COMPILED=0)"
# nginx with many peers (context for tproxy_n1000/_n10000): NAME -> "PORT PEERS". The `nginx`
# system's configuration, but its upstream lists PEERS servers 127.0.0.1:BACKEND_PORT+i with
# least_conn (tproxy's peers and policy); the keepalive cache stays 64 for the whole upstream.
declare -A NP
NP[nginx_n1000]="18102 1000"
NP[nginx_n10000]="18104 10000"
DESC[nginx_n1000]="nginx, 1,000 servers in the upstream, least_conn, keepalive 64"
DESC[nginx_n10000]="nginx, 10,000 servers in the upstream, least_conn, keepalive 64"

is_tproxy() { [ -n "${TP[$1]:-}" ]; }
is_nginx_peers() { [ -n "${NP[$1]:-}" ]; }
# sys_peers SYSTEM: how many peers of group api the system spreads its requests over
sys_peers() {
    if is_tproxy "$1"; then set -- ${TP[$1]}; echo "$2"
    elif is_nginx_peers "$1"; then set -- ${NP[$1]}; echo "$2"
    else echo 1; fi
}
sys_port() {
    case $1 in
        direct) echo "$BACKEND_PORT" ;;
        nginx) echo $((18100 + PORT_SHIFT)) ;;
        twisted) echo $((18300 + PORT_SHIFT)) ;;
        nginx_n*) is_nginx_peers "$1" || die "unknown system $1"; set -- ${NP[$1]}; echo $(($1 + PORT_SHIFT)) ;;
        *) is_tproxy "$1" || die "unknown system $1"; set -- ${TP[$1]}; echo $(($1 + PORT_SHIFT)) ;;
    esac
}
sys_url() { echo "http://127.0.0.1:$(sys_port "$1")$2"; }   # SYSTEM PATH
sys_pgid() { if [ "$1" = direct ]; then pgid_of backend0; else pgid_of "$1"; fi; }

# ---- what to run -----------------------------------------------------------------------------
has_scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }
uniq_words() { printf '%s\n' "$@" | awk 'NF && !seen[$0]++' | tr '\n' ' '; }
BASE=$(uniq_words nginx $BASELINES)    # nginx is the reference of every ratio: always there
ka=""
has_scenario peers && ka="$ka tproxy_n1 tproxy_n100 tproxy_n1000 tproxy_n10000"
has_scenario groups && ka="$ka tproxy_n1 tproxy_g1000"
has_scenario plugins && ka="$ka tproxy_n1 tproxy_p5 tproxy_p20"
has_scenario log && ka="$ka tproxy_n1 tproxy_log"
# last in each round: they open an upstream connection per request (tens of
# thousands of TIME_WAIT sockets a round), which should not weigh on the others
has_scenario peers && ka="$ka nginx_n1000 nginx_n10000"
if [ -n "$ka" ]; then ka="$BASE $ka"; fi
has_scenario smoke && ka="$ka nginx tproxy_n1"
SYSTEMS=$(uniq_words ${SYSTEMS-$ka})
CLOSE_SYSTEMS=$(uniq_words ${CLOSE_SYSTEMS-$(has_scenario close && echo "$BASE tproxy_n1")})
BODY_SYSTEMS=$(uniq_words ${BODY_SYSTEMS-$(has_scenario body1m && echo "$BASE tproxy_n1")})
GIB_SYSTEMS=$(uniq_words ${GIB_SYSTEMS-$(has_scenario gib && echo "nginx tproxy_n1")})
[ "$ROUNDS" -gt 0 ] || { SYSTEMS=""; CLOSE_SYSTEMS=""; BODY_SYSTEMS=""; }
[ "$GIB_ROUNDS" -gt 0 ] || GIB_SYSTEMS=""
ALL_SYSTEMS=$(uniq_words $SYSTEMS $CLOSE_SYSTEMS $BODY_SYSTEMS $GIB_SYSTEMS)
[ -n "$ALL_SYSTEMS" ] || has_scenario micro || die "nothing to run (SCENARIOS=$SCENARIOS)"
for s in $GIB_SYSTEMS; do
    [ "$s" = nginx ] || is_tproxy "$s" || die "GIB_SYSTEMS: only nginx and tproxy_* can carry 1 GiB (not $s)"
done

# backend ports: peer i of group api is 127.0.0.1:BACKEND_PORT+i
BACKEND_PORTS=1
TPROXY_ANY=0
for s in $ALL_SYSTEMS; do
    sys_port "$s" >/dev/null
    is_tproxy "$s" && TPROXY_ANY=1
    peers_of=$(sys_peers "$s")
    [ "$peers_of" -gt "$BACKEND_PORTS" ] && BACKEND_PORTS=$peers_of
done

# ---- preflight ---------------------------------------------------------------------------------
for tool in "$NGINX" "$WRK" curl taskset setsid "$HOST_PY"; do
    command -v "$tool" >/dev/null || die "$tool missing: run bench/setup.sh first"
done
if [ "$TPROXY_ANY" = 1 ] || has_scenario micro; then
    err=$(PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c "import tproxy.tap" 2>&1) \
        || { echo "$err" | tail -5 >&2; die "$PYTHON cannot import tproxy.tap (run bench/setup.sh, or set PYTHON)"; }
fi
if [[ " $ALL_SYSTEMS " == *" twisted "* ]]; then
    "$TWISTED_PYTHON" -c "import twisted.web.proxy" 2>/dev/null \
        || die "$TWISTED_PYTHON has no Twisted (run bench/setup.sh, or set TWISTED_PYTHON)"
fi
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 CPUs; PROXY_CPU/LOAD_CPU pinning will overlap"
ulimit -n "$(ulimit -Hn)" 2>/dev/null   # 10,000 peers mean 10,000 upstream connections
stop_all   # leftovers of an interrupted earlier run (checked by PID and start time)
trap 'log "stopping everything we started"; stop_all' EXIT
trap 'exit 130' INT TERM

rm -rf "$RUN/conf" "$RUN/logs"
mkdir -p "$RESULTS/raw" "$RUN/logs" "$RUN/conf" "$RUN/tmp" "$RUN/data"
RESULTS=$(cd "$RESULTS" && pwd)
[ "$(dirname "$RESULTS")" = "$BENCH/results" ] && ln -sfn "$(basename "$RESULTS")" "$BENCH/results/latest"
log "results in $RESULTS"
START=$(date +%s)

tp_py_version=$("$PYTHON" -c 'import sys, platform; print(platform.python_implementation(), platform.python_version(), "/", sys.version.split("\n")[-1])')
{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
    echo "settings: SCENARIOS='$SCENARIOS' ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s" \
        "CONNS=$CONNS PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU GIB_ROUNDS=$GIB_ROUNDS GIB_BYTES=$GIB_BYTES" \
        "TWISTD_ARGS='$TWISTD_ARGS' TPROXY_CONFIG_JSON='$TPROXY_CONFIG_JSON'" \
        "PYPY_GC_MAX='${PYPY_GC_MAX:-}' PYPY_GC_NURSERY='${PYPY_GC_NURSERY:-}'" \
        "PYPY_GC_INCREMENT_STEP='${PYPY_GC_INCREMENT_STEP:-}'"
    echo "tproxy commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)" \
        "$( [ -n "$(git -C "$REPO" status --porcelain -- tproxy twisted 2>/dev/null)" ] && echo "(tproxy/ has uncommitted changes)")"
    echo "tproxy python: $PYTHON = $tp_py_version"
    (cd "$REPO" && PYTHONPATH="$REPO" "$PYTHON" -c "import twisted, pluggy; print('tproxy twisted', twisted.__version__, '/ pluggy', pluggy.__version__)
try:
    import httptools; print('httptools', httptools.__version__)
except ImportError:
    print('httptools: not installed')" 2>&1)
    echo "twisted system python: $TWISTED_PYTHON = $("$TWISTED_PYTHON" -c 'import platform, twisted; print(platform.python_implementation(), platform.python_version(), "twisted", twisted.__version__)' 2>&1)"
    echo "wrk: $("$WRK" --version 2>&1 | head -1)"
    echo "curl: $(curl --version | head -1)"
    echo "nginx: $("$NGINX" -v 2>&1)"
} >"$RESULTS/versions.txt"
"$HOST_PY" - "$RESULTS/meta.json" <<EOF
import json, sys
json.dump({"python_impl": "$PY_IMPL", "smoke": "$SMOKE" == "1", "rounds": $ROUNDS,
           "duration": $DURATION, "warmup": $WARMUP, "conns": $CONNS, "desc": {
$(for s in $ALL_SYSTEMS; do printf '"%s": "%s",\n' "$s" "${DESC[$s]}"; done)
}}, open(sys.argv[1], "w"), indent=1)
EOF

# ---- helpers -------------------------------------------------------------------------------
# record OUT SYSTEM MODE ROUND WARMUP CPU_BEFORE CPU_AFTER TICKS ACCEPTS SYS_TICKS: append one line to runs.jsonl.
record() {
    local out=$1 sys=$2 mode=$3 round=$4 warm=$5 json
    json=$(sed -n 's/^WRKJSON {//p' "$out" | tail -1)
    if [ -z "$json" ]; then
        log "warning: no wrk result for $sys ($mode, round $round): see $out"
        json='"requests":0,"duration_us":0,"bytes":0,"err_connect":0,"err_read":0,"err_write":0,'
        json+='"err_status":0,"err_timeout":0,"lat_mean_us":0,"lat_p50_us":0,"lat_p90_us":0,'
        json+='"lat_p99_us":0,"lat_max_us":0,"failed":true}'
    fi
    printf '{"kind":"wrk","system":"%s","mode":"%s","round":%s,"warmup":%s,"cpu_proxy_busy":%s,"cpu_load_busy":%s,"proxy_cpu_ticks":%s,"proxy_sys_ticks":%s,"clk_tck":%s,"backend_accepts":%s,%s\n' \
        "$sys" "$mode" "$round" "$warm" "$(busy_pct "$6" "$7" 1)" "$(busy_pct "$6" "$7" 2)" \
        "$8" "${10}" "$(getconf CLK_TCK)" "$9" "$json" >>"$RESULTS/runs.jsonl"
}

# measure SYSTEM MODE ROUND: warm up, then one timed wrk run. MODE: keepalive, close, body1m.
measure() {
    local sys=$1 mode=$2 round=$3 url out before after t0 t1 s0 s1 a0 a1 pgid extra=()
    case $mode in
        body1m) url=$(sys_url "$sys" /api/bench-1m) ;;
        *) url=$(sys_url "$sys" /api/x) ;;
    esac
    [ "$mode" = close ] && extra=(-H "Connection: close")
    pgid=$(sys_pgid "$sys")
    prime "$sys" "$mode" "$round" "$url" "${extra[@]}"
    if [ "$WARMUP" -gt 0 ]; then
        out="$RESULTS/raw/$mode-r$round-$sys.warmup.txt"
        a0=$(backend_accepts); before=$(cpu_snap); t0=$(proc_ticks "$pgid"); s0=$(proc_sys_ticks "$pgid")
        run_wrk "$url" "$WARMUP" "$CONNS" "$out" "${extra[@]}"
        after=$(cpu_snap); t1=$(proc_ticks "$pgid"); s1=$(proc_sys_ticks "$pgid"); a1=$(backend_accepts)
        record "$out" "$sys" "$mode" "$round" true "$before" "$after" $((t1 - t0)) $((a1 - a0 - NB)) $((s1 - s0))
    fi
    out="$RESULTS/raw/$mode-r$round-$sys.txt"
    a0=$(backend_accepts); before=$(cpu_snap); t0=$(proc_ticks "$pgid"); s0=$(proc_sys_ticks "$pgid")
    run_wrk "$url" "$DURATION" "$CONNS" "$out" "${extra[@]}" || log "warning: wrk exited $? for $sys"
    after=$(cpu_snap); t1=$(proc_ticks "$pgid"); s1=$(proc_sys_ticks "$pgid"); a1=$(backend_accepts)
    record "$out" "$sys" "$mode" "$round" false "$before" "$after" $((t1 - t0)) $((a1 - a0 - NB)) $((s1 - s0))
    log "$(printf '%-9s r%s %-14s %10s rps %9s  p50 %8s  p99 %8s  proxy-cpu %5s%%  load-cpu %5s%%' \
        "$mode" "$round" "$sys" \
        "$(awk '/^Requests\/sec:/{print $2}' "$out")" "$(awk '/^Transfer\/sec:/{print $2}' "$out")" \
        "$(awk '$1=="50%"{print $2}' "$out")" "$(awk '$1=="99%"{print $2}' "$out")" \
        "$(busy_pct "$before" "$after" 1)" "$(busy_pct "$before" "$after" 2)")"
}

# prime SYSTEM MODE ROUND URL [wrk args]: for a system with N >= 100 peers (tproxy_nN,
# nginx_nN), 2N requests before the warm-up, so that least_conn, which takes equal peers in
# turn, has used every peer and opened its upstream connection, as steady traffic would have
# (idle upstream connections close after 60 s, longer than a round; nginx keeps only 64 idle
# ones, but is primed alike, for a like-for-like comparison). Timed and recorded (kind
# "prime"), not counted.
prime() {
    local sys=$1 mode=$2 round=$3 url=$4 peers n out t0 t1 a0 a1 rc secs; shift 4
    peers=$(sys_peers "$sys")
    [ "$peers" -ge 100 ] || return 0
    n=$((2 * peers))
    out="$RESULTS/raw/$mode-r$round-$sys.prime.txt"
    a0=$(backend_accepts); t0=$(date +%s.%N)
    PRIME_REQUESTS=$n timeout -k 5 300 taskset -c "$LOAD_CPU" "$WRK" -t1 -c"$CONNS" -d290s \
        -s "$BENCH/tools/wrk_prime.lua" "$@" "$url" >"$out" 2>&1
    rc=$?
    t1=$(date +%s.%N); a1=$(backend_accepts)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    printf '{"kind":"prime","system":"%s","mode":"%s","round":%s,"warmup":true,"requests":%s,"seconds":%s,"backend_accepts":%s,"ok":%s}\n' \
        "$sys" "$mode" "$round" "$n" "$secs" $((a1 - a0 - NB)) \
        "$([ $rc = 0 ] && echo true || echo false)" >>"$RESULTS/runs.jsonl"
    log "$(printf '%-9s r%s %-14s primed with %s requests in %.1f s, %s new upstream connections%s' "$mode" "$round" \
        "$sys" "$n" "$secs" $((a1 - a0 - NB)) "$([ $rc = 0 ] || echo ", FAILED (see $out)")")"
}

# sanity SYSTEM PATH SIZE: one request must answer 200 with SIZE body bytes.
sanity() {
    local got
    got=$(curl -s -m 10 -o /dev/null -w '%{http_code} %{size_download}' "$(sys_url "$1" "$2")")
    [ "$got" = "200 $3" ] || die "$1 answered '$got' (status, bytes) to $(sys_url "$1" "$2"), expected '200 $3' (logs in $RUN/logs)"
}

# backend_accepts: connections accepted so far by all backend processes (nginx stub_status);
# each call opens one connection per backend, which the next call counts (run.sh subtracts it).
backend_accepts() {
    local b sum=0 n
    for b in $(seq 0 $((NB - 1))); do
        n=$(curl -s -m 5 "http://127.0.0.1:$((BACKEND_PORT + b * BACKEND_PORTS_PER_PROC))/bench-status" |
            awk 'NR == 3 {print $1}')
        sum=$((sum + ${n:-0}))
    done
    echo "$sum"
}

regctl() { "$HOST_PY" "$BENCH/tools/regctl.py" "$@"; }

# register SYSTEM WHAT ARGS...: one regctl call; its JSON line goes to registration.jsonl
register() {
    local sys=$1 what=$2 line; shift 2
    line=$(regctl "$@") || die "registration failed for $sys ($what): $line"
    echo "{\"system\":\"$sys\",\"what\":\"$what\",${line#\{}" >>"$RESULTS/registration.jsonl"
    log "  $sys: $what: $line"
}

# ---- start ---------------------------------------------------------------------------------
head -c 1048576 /dev/zero >"$RUN/data/1m.bin"
rm -f "$RUN/data/1g.bin"
truncate -s "$GIB_BYTES" "$RUN/data/1g.bin"       # sparse: no disk, read as zeros
NB=$(((BACKEND_PORTS + BACKEND_PORTS_PER_PROC - 1) / BACKEND_PORTS_PER_PROC))
# Every peer port must be ours: a port held by another service (e.g. 26379, Redis Sentinel's)
# would make nginx give up after its bind retries, once the run has started.
if command -v ss >/dev/null; then
    busy=$(ss -Htln | awk -v lo="$BACKEND_PORT" -v hi=$((BACKEND_PORT + BACKEND_PORTS - 1)) \
        '{ n = split($4, a, ":"); p = a[n] + 0; if (p >= lo && p <= hi) print p }' | sort -un | head -5 | tr '\n' ' ')
    [ -z "$busy" ] || die "backend ports in use by something else: $busy(set PORT_SHIFT to move all ports)"
fi
log "starting $NB backend nginx on CPU $LOAD_CPU (ports $BACKEND_PORT..$((BACKEND_PORT + BACKEND_PORTS - 1)))"
for b in $(seq 0 $((NB - 1))); do
    first=$((BACKEND_PORT + b * BACKEND_PORTS_PER_PROC))
    last=$((first + BACKEND_PORTS_PER_PROC - 1))
    [ "$last" -ge $((BACKEND_PORT + BACKEND_PORTS)) ] && last=$((BACKEND_PORT + BACKEND_PORTS - 1))
    seq "$first" "$last" | awk '{print "listen 127.0.0.1:" $1 " backlog=4096;"}' >"$RUN/conf/backend$b.listen.conf"
    nginx_up "backend$b" "$LOAD_CPU" "$BENCH/conf/backend.nginx.conf.in" "$first"
    wait_port "$last" 10 || die "backend$b did not listen on $last"
done
if [ -n "$GIB_SYSTEMS" ]; then
    port_free "$SINK_PORT" || die "port $SINK_PORT is already in use"
    start_proc sink "$LOAD_CPU" "$HOST_PY" "$BENCH/tools/sink.py" "$SINK_PORT"
    wait_started sink "$SINK_PORT" 10 || die "the upload sink did not start"
fi

start_tproxy() { # NAME
    local name=$1 port peers groups plugins extra admin conf
    read -r port peers groups plugins extra <<<"${TP[$name]}"
    port=$((port + PORT_SHIFT))
    admin=$((port + 1))
    conf="$RUN/conf/$name.json"
    "$HOST_PY" - "$conf" "$port" "$admin" "$TTL" "$plugins" "$TPROXY_CONFIG_JSON" "${extra:-}" <<'EOF' || die "bad TPROXY_CONFIG_JSON"
import json, sys
path, port, admin, ttl, plugins, extra, more = sys.argv[1:8]
ttl = float(ttl)
conf = {
    "listen": "tcp:%s:interface=127.0.0.1" % port,
    "admin": {"listen": "tcp:%s:interface=127.0.0.1" % admin},
    "registry": {"ttl": int(ttl) if ttl.is_integer() else ttl, "cleanup_interval": 10},
    "plugins": ["registry", "router", "least_conn"]
               + [{"name": "bench.noop_plugins", "settings": {}}] * int(plugins)
               + [name for name in more.split(",") if name],
}
conf.update(json.loads(extra) if extra.strip() else {})
with open(path, "w") as f:
    json.dump(conf, f, indent=2)
EOF
    port_free "$port" || die "port $port is already in use (stale run? try bench/stop.sh)"
    port_free "$admin" || die "port $admin is already in use (stale run? try bench/stop.sh)"
    # PYTHONPATH: the working tree's tproxy (and its twisted/plugins drop-in) and bench.noop_plugins
    start_proc "$name" "$PROXY_CPU" env PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" ${TENV[$name]:-} \
        "$PYTHON" -c 'import sys; sys.argv[0] = "twistd"; from twisted.scripts.twistd import run; run()' \
        -n --pidfile= $TWISTD_ARGS tproxy -c "$conf"
    wait_started "$name" "$port" 60 || die "$name did not start (see $RUN/logs/$name.out)"
    wait_port "$admin" 10 || die "$name: admin listener did not start on $admin"
    register "$name" "peers in api" add "http://127.0.0.1:$admin" --base "$BACKEND_PORT" --count "$peers" --prefix api
    if [ "$groups" -gt 0 ]; then
        register "$name" "groups g0..g$((groups - 1))" groups "http://127.0.0.1:$admin" --count "$groups" --port "$BACKEND_PORT"
    fi
}

# start_nginx_peers NAME: the `nginx` system's configuration (conf/nginx-proxy.conf.in), with
# the one server of its upstream replaced by least_conn and PEERS servers, and descriptors
# enough for one connection per peer plus clients (nginx itself keeps at most CONNS active +
# 64 idle upstream connections; the rest is headroom). Derived from the same template, so
# that nothing else differs; dies if the template no longer has the lines it replaces.
start_nginx_peers() {
    local name=$1 port peers tpl="$RUN/conf/$1.conf.in" wc nofile hard
    read -r port peers <<<"${NP[$name]}"
    port=$((port + PORT_SHIFT))
    wc=$((peers + 4096))           # the `nginx` system's 4096, plus one per peer
    nofile=$((wc + 64))            # + listening sockets, logs
    hard=$(ulimit -Hn)
    [ "$hard" = unlimited ] || [ "$hard" -ge "$nofile" ] \
        || log "warning: $name wants $nofile descriptors, the hard limit is $hard"
    seq "$BACKEND_PORT" $((BACKEND_PORT + peers - 1)) | awk '{print "server 127.0.0.1:" $1 ";"}' \
        >"$RUN/conf/$name.servers.conf"
    awk -v wc="$wc" -v nofile="$nofile" '
        /^worker_processes 1;$/ { print; print "worker_rlimit_nofile " nofile ";   # nginx_nN: see run.sh"; n++; next }
        /^    worker_connections 4096;$/ { print "    worker_connections " wc ";"; n++; next }
        /^    upstream backend \{$/ { up = 1 }
        up && /^        server 127\.0\.0\.1:@BACKEND_PORT@;$/ {
            print "        least_conn;                        # as tproxy_nN"
            print "        include @RUN@/conf/@NAME@.servers.conf;   # 127.0.0.1:@BACKEND_PORT@ + 0..N-1"
            n++; up = 0; next }
        { print }
        END { exit n != 3 }' "$BENCH/conf/nginx-proxy.conf.in" >"$tpl" \
        || die "conf/nginx-proxy.conf.in changed: $name cannot be derived from it (see run.sh)"
    nginx_up "$name" "$PROXY_CPU" "$tpl" "$port"
}

for s in $ALL_SYSTEMS; do
    log "starting $s"
    case $s in
        direct) ;;
        nginx) nginx_up nginx "$PROXY_CPU" "$BENCH/conf/nginx-proxy.conf.in" "$(sys_port nginx)" ;;
        nginx_n*) start_nginx_peers "$s" ;;
        twisted)
            start_proc twisted "$PROXY_CPU" "$TWISTED_PYTHON" "$BENCH/systems/twisted_revproxy.py" \
                "$(sys_port twisted)" 127.0.0.1 "$BACKEND_PORT"
            wait_started twisted "$(sys_port twisted)" 30 || die "twisted did not start" ;;
        *) start_tproxy "$s" ;;
    esac
    sanity "$s" /api/x 100
done
cp "$RUN"/conf/*.json "$RUN"/conf/nginx.conf "$RUN"/conf/nginx_n*[0-9].conf "$RUN"/conf/backend0.conf "$RESULTS/" 2>/dev/null
for b in $(seq 0 $((NB - 1))); do  # still there (nginx retries a failed bind for a few seconds)
    group_alive "$(pgid_of "backend$b")" || die "backend$b exited: $(tail -1 "$RUN/logs/backend$b.error.log")"
done

# ---- the rounds ----------------------------------------------------------------------------
for r in $(seq "$ROUNDS"); do
    for s in $SYSTEMS; do measure "$s" keepalive "$r"; done
done
for r in $(seq "$ROUNDS"); do
    for s in $CLOSE_SYSTEMS; do measure "$s" close "$r"; done
done
for s in $BODY_SYSTEMS; do sanity "$s" /api/bench-1m 1048576; done
for r in $(seq "$ROUNDS"); do
    for s in $BODY_SYSTEMS; do measure "$s" body1m "$r"; done
done

# ---- 1 GiB through each way ------------------------------------------------------------------
if [ -n "$GIB_SYSTEMS" ]; then
    for s in $GIB_SYSTEMS; do
        if is_tproxy "$s"; then
            register "$s" "upload sink in group up" add "http://127.0.0.1:$(($(sys_port "$s") + 1))" \
                --base "$SINK_PORT" --count 1 --prefix up
        fi
    done
    for r in $(seq "$GIB_ROUNDS"); do
        for dir in download upload upload_chunked; do
            for s in $GIB_SYSTEMS; do
                if [ "$dir" = download ]; then path=/api/bench-1g; else path=/up/upload; fi
                line=$(taskset -c "$LOAD_CPU" "$HOST_PY" "$BENCH/tools/transfer.py" --pgid "$(sys_pgid "$s")" \
                    --direction "$dir" --url "$(sys_url "$s" "$path")" --bytes "$GIB_BYTES" \
                    --system "$s" --round "$r") || log "warning: transfer.py failed for $s $dir"
                [ -n "$line" ] && echo "$line" >>"$RESULTS/runs.jsonl"
                log "$(echo "$line" | "$HOST_PY" -c 'import json, sys; d = json.load(sys.stdin)
print("%-14s r%s %-14s %s  %7.1f MB/s  rss %d -> peak %d kB (+%.1f MB)  proxy cpu %.2f s %s" % (d["mode"], d["round"],
      d["system"], "ok" if d["ok"] else "FAILED", d["mb_s"], d["rss_before_kb"], d["rss_peak_kb"],
      d["rss_growth_mb"], d["proxy_cpu_s"], d["curl_error"]))' 2>&1)"
            done
        done
    done
fi

# ---- finish --------------------------------------------------------------------------------
for s in $ALL_SYSTEMS; do
    [ "$s" = direct ] || cp "$RUN/logs/$s.out" "$RESULTS/$s.log" 2>/dev/null
done
stop_all
trap - EXIT
log "all processes stopped; took $(($(date +%s) - START)) s"
if has_scenario micro; then
    log "micro-benchmarks (bench/micro.py) on CPU $PROXY_CPU"
    taskset -c "$PROXY_CPU" "$PYTHON" "$BENCH/micro.py" --seconds "$MICRO_SECONDS" >"$RESULTS/micro.md" \
        2>"$RESULTS/micro.err" || log "warning: micro.py failed (see $RESULTS/micro.err)"
    [ -s "$RESULTS/micro.err" ] || rm -f "$RESULTS/micro.err"
fi
check=()
[ "$SMOKE" = 1 ] && check=(--check)
"$HOST_PY" "$BENCH/tools/summarize.py" "$RESULTS" "${check[@]}"
