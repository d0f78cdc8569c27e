#!/usr/bin/env python3
"""One large transfer through a proxy with curl, sampling the proxy's memory meanwhile.

Usage: transfer.py --pgid PGID --direction {download,upload,upload_chunked} --url URL
                   --bytes N [--system NAME] [--round R] [--interval 0.02]

download        curl GETs URL (a 1 GiB file of the backend) to /dev/null
upload          `head -c N /dev/zero | curl -T -` with a Content-Length header
upload_chunked  the same without a length: curl sends it chunked
                (uploads go to tools/sink.py, which answers {"received": N} after the last byte)

Run it pinned to the load CPU (curl inherits the affinity). While curl runs, VmRSS of every
process of the proxy's process group is summed every INTERVAL seconds; VmHWM is read before
and after. Prints one JSON line: the bytes moved (checked against N), seconds, MB/s (10^6
bytes/s), RSS before/peak/after in kB, the peak growth in MB (10^6 bytes), and the proxy's
CPU seconds. Standard library only.
"""
import argparse
import json
import os
import subprocess
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_pids(pgid):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (3rd field of stat), fields[2] the process group
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def status_kb(pids, key):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpu_seconds(pids):
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return ticks / CLK_TCK


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pgid", type=int, required=True)
    p.add_argument("--direction", choices=("download", "upload", "upload_chunked"), required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--system", default="")
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--timeout", type=int, default=300)
    args = p.parse_args()

    pids = group_pids(args.pgid)
    rss_before = status_kb(pids, "VmRSS:")
    hwm_before = status_kb(pids, "VmHWM:")
    cpu_before = cpu_seconds(pids)
    peak = [rss_before]
    done = threading.Event()

    def sample():
        while not done.wait(args.interval):
            rss = status_kb(pids, "VmRSS:")
            if rss > peak[0]:
                peak[0] = rss

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    body = tempfile.NamedTemporaryFile(prefix="transfer-", suffix=".out", delete=False)
    body.close()
    curl = ["curl", "-sS", "--max-time", str(args.timeout), "-o",
            "/dev/null" if args.direction == "download" else body.name,
            "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}"]
    feeder = None
    if args.direction != "download":
        # no "Expect: 100-continue" round trip; for "upload" a length instead of chunking
        curl += ["-H", "Expect:", "-T", "-"]
        if args.direction == "upload":
            curl += ["-H", "Transfer-Encoding:", "-H", f"Content-Length: {args.bytes}"]
        feeder = subprocess.Popen(["head", "-c", str(args.bytes), "/dev/zero"], stdout=subprocess.PIPE)
    start = time.monotonic()
    proc = subprocess.run(curl + [args.url], stdin=feeder.stdout if feeder else subprocess.DEVNULL,
                          capture_output=True, text=True)
    seconds = time.monotonic() - start
    if feeder:
        feeder.stdout.close()
        feeder.wait()
    done.set()
    sampler.join()
    rss_after = status_kb(pids, "VmRSS:")
    peak[0] = max(peak[0], rss_after)
    hwm_after = status_kb(pids, "VmHWM:")
    cpu = cpu_seconds(pids) - cpu_before

    parts = proc.stdout.split()
    code, size_down, size_up, time_total = (parts + ["0"] * 4)[:4]
    if args.direction == "download":
        moved = int(float(size_down))
    else:
        try:
            with open(body.name) as f:
                moved = json.load(f)["received"]
        except (OSError, ValueError, KeyError, TypeError):
            moved = -1
    os.unlink(body.name)
    ok = proc.returncode == 0 and code == "200" and moved == args.bytes
    seconds = float(time_total) if float(time_total) > 0 else seconds
    out = {
        "kind": "transfer", "system": args.system, "mode": args.direction, "round": args.round,
        "warmup": False, "ok": ok, "http_code": code, "curl_rc": proc.returncode,
        "curl_error": proc.stderr.strip()[:300], "bytes_expected": args.bytes, "bytes": moved,
        "seconds": round(seconds, 3), "mb_s": round(args.bytes / seconds / 1e6, 1) if ok else 0,
        "rss_before_kb": rss_before, "rss_peak_kb": peak[0], "rss_after_kb": rss_after,
        "rss_growth_mb": round((peak[0] - rss_before) * 1024 / 1e6, 1),
        "hwm_before_kb": hwm_before, "hwm_after_kb": hwm_after,
        "proxy_cpu_s": round(cpu, 2), "pids": pids,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
