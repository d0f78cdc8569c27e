#!/usr/bin/env bash
# bench/stream_bench.sh: tproxy's TCP (L4) proxy beside nginx's `stream {}`, in one run.
#
# redis-benchmark (SET and GET, without pipelining and with -P 16) straight to a local
# redis-server ("direct"), through nginx `stream { proxy_pass }` ("nginx") and through a
# tproxy `streams` listener ("tproxy"), in interleaved rounds (direct nginx tproxy, direct
# nginx tproxy, ...); then bulk transfers through nginx and tproxy (BULK_BYTES down from a
# source, and up to a sink), with tproxy's peak RSS. Prints per system the median over the
# rounds and its ratio to nginx in the same run; writes $RESULTS/{runs.jsonl,table.md}.
#
# Each proxy is one process (nginx: one worker) pinned to PROXY_CPU; redis-server,
# redis-benchmark and the bulk tool share LOAD_CPU. Every process started here is stopped
# when the script ends (lib.sh: by recorded PID and start time, by process group).
#
# Needs: apt-get install -y redis-server nginx libnginx-mod-stream (redis-server is started
# here, never as a service); tproxy's dependencies for PYTHON.
#
# Knobs (environment): ROUNDS (3), REQUESTS (200000, per test without pipelining),
# PIPE_REQUESTS (2000000, with pipelining), CLIENTS (50), PIPELINE (16), BULK_BYTES (1 GiB),
# BULK_ROUNDS (1), PROXY_CPU (0), LOAD_CPU (1), PYTHON (tproxy's interpreter),
# TWISTD_ARGS ("-r tproxy"; "" for Twisted's default reactor), PORT_BASE (16379),
# NGINX_STREAM_MODULE, SMOKE=1 (one short round, small transfers), RESULTS.
set -u -o pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN=${RUN:-$BENCH/run/stream}        # own pid/log/conf directory: never touches run.sh's
# shellcheck source=lib.sh
source "$BENCH/lib.sh"

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    ROUNDS=${ROUNDS:-1}
    REQUESTS=${REQUESTS:-20000}
    PIPE_REQUESTS=${PIPE_REQUESTS:-100000}
    BULK_BYTES=${BULK_BYTES:-67108864}
fi
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
PIPE_REQUESTS=${PIPE_REQUESTS:-2000000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-16}
BULK_BYTES=${BULK_BYTES:-1073741824}
BULK_ROUNDS=${BULK_ROUNDS:-1}
TWISTD_ARGS=${TWISTD_ARGS--r tproxy}
PORT_BASE=${PORT_BASE:-16379}
NGINX_STREAM_MODULE=${NGINX_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
HOST_PY=${HOST_PY:-python3}
if [ -x "$VENV/bin/python" ]; then DEFAULT_PY=$VENV/bin/python; else DEFAULT_PY=$(command -v python3); fi
PYTHON=${PYTHON:-$DEFAULT_PY}
RESULTS=${RESULTS:-$BENCH/results/stream-$(date +%Y%m%d-%H%M%S)}
TWISTD='import sys; sys.argv[0] = "twistd"; from twisted.scripts.twistd import run; run()'

REDIS_PORT=$PORT_BASE
declare -A PORT=([direct]=$PORT_BASE [nginx]=$((PORT_BASE + 1)) [tproxy]=$((PORT_BASE + 2)))
TP_ADMIN=$((PORT_BASE + 3)); TP_HTTP=$((PORT_BASE + 4))
SOURCE_PORT=$((PORT_BASE + 10)); SINK_PORT=$((PORT_BASE + 11))
declare -A DOWN_PORT=([nginx]=$((PORT_BASE + 12)) [tproxy]=$((PORT_BASE + 14)))
declare -A UP_PORT=([nginx]=$((PORT_BASE + 13)) [tproxy]=$((PORT_BASE + 15)))
SYSTEMS="direct nginx tproxy"

for tool in redis-server redis-benchmark redis-cli "$NGINX"; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y redis-server nginx libnginx-mod-stream)"
done
[ -f "$NGINX_STREAM_MODULE" ] || die "no nginx stream module at $NGINX_STREAM_MODULE (apt-get install -y libnginx-mod-stream)"
for p in $REDIS_PORT ${PORT[nginx]} ${PORT[tproxy]} $TP_ADMIN $TP_HTTP $SOURCE_PORT $SINK_PORT \
         ${DOWN_PORT[nginx]} ${DOWN_PORT[tproxy]} ${UP_PORT[nginx]} ${UP_PORT[tproxy]}; do
    port_free "$p" || die "port $p is in use (PORT_BASE=$PORT_BASE; a stale run? RUN=$RUN bash bench/stop.sh)"
done

mkdir -p "$RUN/conf" "$RUN/logs" "$RUN/pids" "$RESULTS"
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

# ---- start everything ------------------------------------------------------------------------
log "redis-server on $REDIS_PORT (CPU $LOAD_CPU)"
start_proc redis "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no --protected-mode yes --daemonize no
wait_started redis "$REDIS_PORT" || die "redis-server did not start"
start_proc bulk_source "$LOAD_CPU" "$HOST_PY" "$BENCH/tools/stream_bulk.py" serve \
    --port "$SOURCE_PORT" --mode source --bytes "$BULK_BYTES"
start_proc bulk_sink "$LOAD_CPU" "$HOST_PY" "$BENCH/tools/stream_bulk.py" serve \
    --port "$SINK_PORT" --mode sink --bytes 0
wait_started bulk_source "$SOURCE_PORT" && wait_started bulk_sink "$SINK_PORT" || die "bulk backends"

cat >"$RUN/conf/nginx_stream.conf" <<EOF
# nginx stream {} in front of the same backends, one worker pinned to PROXY_CPU.
load_module $NGINX_STREAM_MODULE;
daemon off;
worker_processes 1;
pid $RUN/nginx_stream.pid;
error_log $RUN/logs/nginx_stream.error.log warn;
events { worker_connections 4096; }
stream {
    proxy_connect_timeout 5s;
    proxy_timeout 600s;
    upstream redis { server 127.0.0.1:$REDIS_PORT; }
    upstream bulk_down { server 127.0.0.1:$SOURCE_PORT; }
    upstream bulk_up { server 127.0.0.1:$SINK_PORT; }
    server { listen 127.0.0.1:${PORT[nginx]}; proxy_pass redis; }
    server { listen 127.0.0.1:${DOWN_PORT[nginx]}; proxy_pass bulk_down; }
    server { listen 127.0.0.1:${UP_PORT[nginx]}; proxy_pass bulk_up; proxy_half_close on; }
}
EOF
"$NGINX" -t -q -e "$RUN/logs/nginx_stream.error.log" -c "$RUN/conf/nginx_stream.conf" \
    || die "nginx -t failed (see $RUN/conf/nginx_stream.conf)"
log "nginx stream {} on ${PORT[nginx]} (CPU $PROXY_CPU)"
start_proc nginx_stream "$PROXY_CPU" "$NGINX" -e "$RUN/logs/nginx_stream.error.log" \
    -c "$RUN/conf/nginx_stream.conf"
wait_started nginx_stream "${PORT[nginx]}" || die "nginx did not start"

cat >"$RUN/conf/tproxy_stream.json" <<EOF
{
  "listen": "tcp:$TP_HTTP:interface=127.0.0.1",
  "admin": {"listen": "tcp:$TP_ADMIN:interface=127.0.0.1"},
  "upstreams": {
    "redis": {"peers": ["127.0.0.1:$REDIS_PORT"]},
    "bulk_down": {"peers": ["127.0.0.1:$SOURCE_PORT"]},
    "bulk_up": {"peers": ["127.0.0.1:$SINK_PORT"]}
  },
  "plugins": ["registry", "least_conn"],
  "streams": [
    {"listen": "tcp:${PORT[tproxy]}:interface=127.0.0.1", "group": "redis"},
    {"listen": "tcp:${DOWN_PORT[tproxy]}:interface=127.0.0.1", "group": "bulk_down"},
    {"listen": "tcp:${UP_PORT[tproxy]}:interface=127.0.0.1", "group": "bulk_up"}
  ]
}
EOF
log "tproxy streams on ${PORT[tproxy]} (CPU $PROXY_CPU, $PYTHON, twistd $TWISTD_ARGS)"
# shellcheck disable=SC2086
start_proc tproxy_stream "$PROXY_CPU" env PYTHONPATH="$REPO" "$PYTHON" -c "$TWISTD" \
    -n --pidfile= $TWISTD_ARGS tproxy -c "$RUN/conf/tproxy_stream.json"
wait_started tproxy_stream "${PORT[tproxy]}" || die "tproxy did not start"

for sys in $SYSTEMS; do
    answer=$(timeout 5 redis-cli -p "${PORT[$sys]}" ping 2>&1)
    [ "$answer" = PONG ] || die "$sys: redis-cli ping answered '$answer'"
done

# ---- redis-benchmark, interleaved rounds -----------------------------------------------------
# rb SYSTEM MODE ROUND: one redis-benchmark run; a JSON line per test into runs.jsonl.
rb() {
    local sys=$1 mode=$2 round=$3 n=$REQUESTS extra=() out pg t0 t1
    if [ "$mode" = pipelined ]; then n=$PIPE_REQUESTS; extra=(-P "$PIPELINE"); fi
    out="$RESULTS/rb-$sys-$mode-$round.csv"
    pg=""
    [ "$sys" = direct ] || pg=$(pgid_of "${sys}_stream")
    t0=$([ -n "$pg" ] && proc_ticks "$pg" || echo 0)
    timeout -k 5 600 taskset -c "$LOAD_CPU" redis-benchmark -h 127.0.0.1 -p "${PORT[$sys]}" \
        -c "$CLIENTS" -n "$n" -t set,get --csv "${extra[@]}" >"$out" 2>"$out.err" \
        || die "redis-benchmark failed for $sys ($mode): $(tail -2 "$out.err")"
    t1=$([ -n "$pg" ] && proc_ticks "$pg" || echo 0)
    "$HOST_PY" - "$out" "$sys" "$mode" "$round" "$n" "$((t1 - t0))" >>"$RESULTS/runs.jsonl" <<'PY'
import csv, json, os, sys
path, system, mode, rnd, n, ticks = sys.argv[1:]
rows = list(csv.reader(open(path)))
head = rows[0]
for row in rows[1:]:
    r = dict(zip(head, row))
    print(json.dumps({"kind": "rb", "system": system, "mode": mode, "round": int(rnd),
                      "test": r["test"], "rps": float(r["rps"]),
                      "p50_ms": float(r["p50_latency_ms"]), "p99_ms": float(r["p99_latency_ms"]),
                      "requests": int(n), "proxy_cpu_s": int(ticks) / os.sysconf("SC_CLK_TCK")}))
PY
    log "  $sys $mode: $(tr '\n' ' ' <"$out" | sed 's/"test","rps",[^ ]* //')"
}

log "warm-up"
for sys in $SYSTEMS; do
    timeout 120 taskset -c "$LOAD_CPU" redis-benchmark -p "${PORT[$sys]}" -c "$CLIENTS" \
        -n 20000 -t set,get -q >/dev/null 2>&1
done
for round in $(seq "$ROUNDS"); do
    for mode in plain pipelined; do
        log "round $round/$ROUNDS, $mode"
        for sys in $SYSTEMS; do rb "$sys" "$mode" "$round"; done
    done
done

# ---- bulk transfers ------------------------------------------------------------------------------
for round in $(seq "$BULK_ROUNDS"); do
    for mode in download upload; do
        for sys in nginx tproxy; do
            if [ "$mode" = download ]; then port=${DOWN_PORT[$sys]}; else port=${UP_PORT[$sys]}; fi
            timeout -k 5 600 taskset -c "$LOAD_CPU" "$HOST_PY" "$BENCH/tools/stream_bulk.py" run \
                --port "$port" --mode "$mode" --bytes "$BULK_BYTES" --system "$sys" \
                --round "$round" >>"$RESULTS/bulk.jsonl" || die "bulk $mode through $sys failed"
            log "  bulk $mode $sys: $(tail -1 "$RESULTS/bulk.jsonl")"
        done
    done
done
tp_pid=$(pgid_of tproxy_stream)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$tp_pid/status" 2>/dev/null)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$tp_pid/status" 2>/dev/null)
echo "{\"kind\": \"memory\", \"system\": \"tproxy\", \"vmhwm_kb\": ${hwm:-0}, \"vmrss_kb\": ${rss:-0}}" \
    >>"$RESULTS/runs.jsonl"
status=$(curl -s "http://127.0.0.1:$TP_ADMIN/upstream/status?prefix=redis" 2>/dev/null || true)
echo "$status" >"$RESULTS/tproxy_upstream_status.json"

# ---- the table -------------------------------------------------------------------------------------
"$HOST_PY" - "$RESULTS" "$TWISTD_ARGS" "$PYTHON" <<'PY' | tee "$RESULTS/table.md"
import json, os, statistics, sys
results, twistd_args, python = sys.argv[1:]
runs = [json.loads(l) for l in open(os.path.join(results, "runs.jsonl"))]
bulk_path = os.path.join(results, "bulk.jsonl")
bulk = [json.loads(l) for l in open(bulk_path)] if os.path.exists(bulk_path) else []
rb = [r for r in runs if r["kind"] == "rb"]
systems = ["direct", "nginx", "tproxy"]
print("## redis-benchmark through a TCP proxy (medians over %d rounds; tproxy: %s, twistd %s)\n"
      % (max(r["round"] for r in rb), python, twistd_args or "default reactor"))
print("| test | system | req/s | x nginx | p50 ms | p99 ms | proxy CPU us/req |")
print("|---|---|---:|---:|---:|---:|---:|")
for mode in ("plain", "pipelined"):
    for test in ("SET", "GET"):
        med = {}
        for s in systems:
            rs = [r for r in rb if r["mode"] == mode and r["test"] == test and r["system"] == s]
            if rs:
                med[s] = (statistics.median(r["rps"] for r in rs),
                          statistics.median(r["p50_ms"] for r in rs),
                          statistics.median(r["p99_ms"] for r in rs),
                          statistics.median(r["proxy_cpu_s"] / (2 * r["requests"]) * 1e6 for r in rs))
        for s in systems:
            if s not in med:
                continue
            rps, p50, p99, cpu = med[s]
            ratio = rps / med["nginx"][0] if "nginx" in med else float("nan")
            label = "%s%s" % (test, " -P" if mode == "pipelined" else "")
            print("| %s | %s | %.0f | %.2f | %.3f | %.3f | %s |" % (
                label, s, rps, ratio, p50, p99, "-" if s == "direct" else "%.1f" % cpu))
if bulk:
    print("\n## bulk transfers (MB/s = 10^6 bytes/s; proxy CPU counted in the pass above only)\n")
    print("| direction | system | MB/s | x nginx | ok |")
    print("|---|---|---:|---:|---|")
    for mode in ("download", "upload"):
        med = {s: statistics.median(b["mbps"] for b in bulk if b["mode"] == mode and b["system"] == s)
               for s in ("nginx", "tproxy") if any(b["mode"] == mode and b["system"] == s for b in bulk)}
        for s, v in med.items():
            ok = all(b["ok"] for b in bulk if b["mode"] == mode and b["system"] == s)
            print("| %s | %s | %.0f | %.2f | %s |" % (mode, s, v, v / med["nginx"], ok))
mem = [r for r in runs if r["kind"] == "memory"]
if mem:
    print("\ntproxy peak RSS (VmHWM) after everything: %.1f MB" % (mem[-1]["vmhwm_kb"] / 1024))
PY
log "results in $RESULTS"
