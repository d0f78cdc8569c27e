#!/usr/bin/env python3
"""The upload sink of the 1 GiB upload runs: an HTTP/1.1 server that reads and discards a
request body (Content-Length or chunked), counts it, and only then answers
``200 {"received": N}``. Standard library only (asyncio).

Usage: sink.py PORT

nginx's own ``return 200`` answers before the body has arrived and then discards it,
which would not measure the proxy carrying the whole upload; this sink answers after
the last byte, so the client's transfer time is the time the body took through the proxy,
and the harness checks that N is exactly what was sent.
"""
import asyncio
import json
import sys

MAX_HEAD = 65536


class SinkProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = bytearray()
        self.state = "head"
        self.remaining = 0
        self.received = 0
        self.close_after = False

    def data_received(self, data):
        if self.buf:  # a partial line (head, chunk size, trailer) from the last call
            self.buf += data
            data = bytes(self.buf)
            self.buf.clear()
        i, n = 0, len(data)
        while i < n:
            state = self.state
            if state == "body" or state == "chunk":
                take = min(self.remaining, n - i)
                i += take
                self.remaining -= take
                self.received += take
                if self.remaining == 0:
                    if state == "body":
                        self.respond()
                    else:
                        self.state = "chunk_crlf"
                        self.remaining = 2
            elif state == "chunk_crlf":
                take = min(self.remaining, n - i)
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = "chunk_size"
            elif state == "head":
                end = data.find(b"\r\n\r\n", i)
                if end < 0:
                    self.buf += data[i:]
                    if len(self.buf) > MAX_HEAD:
                        self.fail(b"431 Request Header Fields Too Large")
                    return
                self.start(data[i:end].decode("latin-1").split("\r\n"))
                i = end + 4
            elif state == "chunk_size" or state == "trailers":
                end = data.find(b"\r\n", i)
                if end < 0:
                    self.buf += data[i:]
                    if len(self.buf) > MAX_HEAD:
                        self.fail(b"400 Bad Request")
                    return
                line = data[i:end]
                i = end + 2
                if state == "trailers":
                    if not line:
                        self.respond()
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.fail(b"400 Bad Request")
                    return
                if size == 0:
                    self.state = "trailers"
                else:
                    self.state = "chunk"
                    self.remaining = size
            else:  # closed
                return

    def start(self, head):
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.received = 0
        self.close_after = "close" in headers.get("connection", "").lower()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = "chunk_size"
        elif int(headers.get("content-length", "0") or 0) > 0:
            self.state = "body"
            self.remaining = int(headers["content-length"])
        else:
            self.respond()

    def respond(self):
        body = json.dumps({"received": self.received}).encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (len(body), b"Connection: close\r\n" if self.close_after else b"", body))
        self.state = "head"
        if self.close_after:
            self.transport.close()

    def fail(self, status):
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.transport.close()
        self.state = "closed"


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, "127.0.0.1", port, backlog=1024)
    print(f"sink on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
