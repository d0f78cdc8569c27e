#!/usr/bin/env python3
"""Bulk TCP transfers for bench/stream_bench.sh: a backend and a client, standard library only.

Usage:
  stream_bulk.py serve --port P --mode {source,sink} --bytes N
      source: every connection is sent N bytes (zeros), then closed.
      sink:   every connection is read to its end (the client's FIN), then answered
              with the decimal count of bytes received, then closed.
      One thread per connection; runs until killed.
  stream_bulk.py run --port P --mode {download,upload} --bytes N [--system NAME] [--round R]
      download: read N bytes from a source (through a proxy) until EOF.
      upload:   send N bytes to a sink, shut down the writing side, read the count back.
      Prints one JSON line: system, round, mode, bytes, seconds, MB/s (10^6 bytes/s), ok.
"""
import argparse
import json
import socket
import threading
import time

CHUNK = 1 << 20


def serve(port, mode, size):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    block = bytes(CHUNK)

    def source(conn):
        left = size
        view = memoryview(block)
        while left > 0:
            n = min(left, CHUNK)
            conn.sendall(view[:n])
            left -= n

    def sink(conn):
        buf = bytearray(CHUNK)
        got = 0
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            got += n
        conn.sendall(b"%d\n" % got)

    def handle(conn):
        try:
            (source if mode == "source" else sink)(conn)
        except OSError:
            pass
        finally:
            conn.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def run(port, mode, size):
    s = socket.create_connection(("127.0.0.1", port))
    start = time.perf_counter()
    buf = bytearray(CHUNK)
    if mode == "download":
        got = 0
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            got += n
        ok = got == size
    else:
        view = memoryview(bytes(CHUNK))
        left = size
        while left > 0:
            n = min(left, CHUNK)
            s.sendall(view[:n])
            left -= n
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            chunk = s.recv(64)
            if not chunk:
                break
            answer += chunk
        got = int(answer or b"0")
        ok = got == size
    seconds = time.perf_counter() - start
    s.close()
    return got, seconds, ok


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["serve", "run"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", required=True,
                   choices=["source", "sink", "download", "upload"])
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--system", default="")
    p.add_argument("--round", type=int, default=0)
    a = p.parse_args()
    if a.command == "serve":
        serve(a.port, a.mode, a.bytes)
        return
    got, seconds, ok = run(a.port, a.mode, a.bytes)
    print(json.dumps({"system": a.system, "round": a.round, "mode": a.mode,
                      "bytes": got, "seconds": round(seconds, 4),
                      "mbps": round(got / seconds / 1e6, 1) if seconds else 0.0,
                      "ok": ok}))


if __name__ == "__main__":
    main()
