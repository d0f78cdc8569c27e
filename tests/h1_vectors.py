"""
HTTP/1.1 request vectors from an outside-in audit of tproxy's front end
against nginx (``bench/tools/h1_differential.py`` runs them through both;
``tests/test_h1_vectors.py`` through :mod:`tproxy.testing`).

Each vector is ``(name, bytes)`` or ``(name, bytes, parts)`` (``parts``:
the bytes in as many sends, for ``Expect: 100-continue``).  A request that
would be smuggled past a proxy that frames it differently from the server
behind asks for ``/SMUGGLED``.

- :func:`own`: message shapes and edge cases of RFC 9110 / 9112 (obs-fold,
  bare CR / LF, CTLs, Content-Length and Transfer-Encoding variants, chunk
  sizes and extensions, trailers, request-target forms, Host, versions,
  methods, keep-alive, Expect, upgrades, limits, pipelining after errors);
- :func:`te_mutations`: Transfer-Encoding header mutations in the manner of
  smuggler.py / Burp's HTTP Request Smuggler (written anew here), each as a
  CL.TE and a TE.CL probe;
- :func:`cl_mutations`: Content-Length permutations.
"""
import re

H = b"Host: x\r\n"
SM = b"GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
G = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"

#: the vectors after which tproxy waits for more bytes from the client (a
#: head or body not complete): every other vector is answered at once
WAITING = {"incomplete-head", "incomplete-body", "empty-conn-close"}


def req(head_fields=b"", body=b"", method=b"POST", target=b"/", version=b"HTTP/1.1", host=True):
    """A request's bytes: the request line, Host, ``head_fields``, ``body``."""
    return method + b" " + target + b" " + version + b"\r\n" + (H if host else b"") + head_fields + b"\r\n" + body

def own():
    """The hand-written vectors."""
    v = []
    a = lambda name, data, parts=None: v.append((name, data) if parts is None else (name, data, parts))
    a("get", G)
    a("post-cl", req(b"Content-Length: 5\r\n", b"hello"))
    a("post-chunked", req(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    a("pipeline-3", G + req(b"Content-Length: 5\r\n", b"hello") + G)
    # obs-fold
    a("obs-fold-field", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")
    a("obs-fold-te", req(b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SM))
    a("obs-fold-first", b"GET / HTTP/1.1\r\n X: y\r\nHost: x\r\n\r\n")
    # bare LF / CR
    a("bare-lf-all", b"GET / HTTP/1.1\nHost: x\n\n")
    a("bare-lf-one-field", b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n")
    a("bare-lf-end", b"GET / HTTP/1.1\r\nHost: x\r\n\n")
    a("bare-lf-reqline", b"GET / HTTP/1.1\nHost: x\r\n\r\n")
    a("bare-cr-value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n")
    a("bare-cr-name", b"GET / HTTP/1.1\r\nHost: x\r\nX\r: b\r\n\r\n")
    a("bare-cr-before-reqline", b"\rGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("crlf-before-reqline", b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("lf-before-reqline", b"\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # CTL / NUL
    a("nul-value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n")
    a("nul-name", b"GET / HTTP/1.1\r\nHost: x\r\nX\x00Y: b\r\n\r\n")
    a("ctl01-value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n")
    a("del-value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n")
    a("vtab-value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x0bb\r\n\r\n")
    a("formfeed-value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x0cb\r\n\r\n")
    a("highbit-value", b"GET / HTTP/1.1\r\nHost: x\r\nX: caf\xe9\r\n\r\n")
    a("highbit-name", b"GET / HTTP/1.1\r\nHost: x\r\nX\xe9: a\r\n\r\n")
    a("nul-target", b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n")
    a("highbit-target", b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n")
    a("del-target", b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n")
    a("tab-target", b"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n")
    a("space-in-target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n")
    a("fragment-target", b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n")
    a("dotdot-target", b"GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n")
    a("dotdot-above-root", b"GET /../b HTTP/1.1\r\nHost: x\r\n\r\n")
    a("pct-dotdot", b"GET /a/%2e%2e/b HTTP/1.1\r\nHost: x\r\n\r\n")
    a("pct00-target", b"GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n")
    a("pct-bad-end", b"GET /ok% HTTP/1.1\r\nHost: x\r\n\r\n")
    a("pct-bad-hex", b"GET /%zz/x HTTP/1.1\r\nHost: x\r\n\r\n")
    a("pct-iis-u", b"GET /%u0061dmin/x HTTP/1.1\r\nHost: x\r\n\r\n")
    a("pct-double", b"GET /a%%41 HTTP/1.1\r\nHost: x\r\n\r\n")
    a("pct-bad-query", b"GET /a?b=%zz HTTP/1.1\r\nHost: x\r\n\r\n")
    a("backslash-target", b"GET /a\\..\\b HTTP/1.1\r\nHost: x\r\n\r\n")
    a("double-slash", b"GET //a//b HTTP/1.1\r\nHost: x\r\n\r\n")
    # Content-Length
    a("cl-dup-same", req(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"))
    a("cl-dup-diff", req(b"Content-Length: 0\r\nContent-Length: 37\r\n", SM))
    a("cl-list", req(b"Content-Length: 5, 5\r\n", b"hello"))
    a("cl-plus", req(b"Content-Length: +5\r\n", b"hello"))
    a("cl-minus", req(b"Content-Length: -1\r\n", b"hello"))
    a("cl-hex", req(b"Content-Length: 0x5\r\n", b"hello"))
    a("cl-dec", req(b"Content-Length: 5.0\r\n", b"hello"))
    a("cl-space-inside", req(b"Content-Length: 1 0\r\n", b"helloworld"))
    a("cl-leading-zeros", req(b"Content-Length: 0005\r\n", b"hello"))
    a("cl-empty", req(b"Content-Length: \r\n", b""))
    a("cl-huge", req(b"Content-Length: 99999999999999999999\r\n", b"hello"))
    a("cl-2p63", req(b"Content-Length: 9223372036854775808\r\n", b"hello"))
    a("cl-trailing-space", req(b"Content-Length: 5 \r\n", b"hello"))
    a("cl-ws-before-colon", req(b"Content-Length : %d\r\n" % len(SM), SM))
    a("cl-on-get", req(b"Content-Length: %d\r\n" % len(SM), SM, method=b"GET"))
    a("cl-te", req(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nX" + SM))
    a("te-cl", req(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n"))
    # Transfer-Encoding
    a("te-chunked-identity", req(b"Transfer-Encoding: chunked, identity\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    a("te-identity", req(b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n", b"hello"))
    a("te-identity-alone", req(b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n" + SM))
    a("te-identity-chunked", req(b"Transfer-Encoding: identity, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    a("te-gzip-chunked", req(b"Transfer-Encoding: gzip, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    a("te-chunked-twice-list", req(b"Transfer-Encoding: chunked, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    a("te-chunked-two-fields", req(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    a("te-upper", req(b"Transfer-Encoding: CHUNKED\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    a("te-http10", req(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", version=b"HTTP/1.0"))
    a("te-xchunked", req(b"Transfer-Encoding: xchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    a("te-empty", req(b"Transfer-Encoding: \r\nContent-Length: 5\r\n", b"hello"))
    a("te-comma-chunked", req(b"Transfer-Encoding: ,chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    # chunked bodies
    ch = lambda body: req(b"Transfer-Encoding: chunked\r\n", body)
    a("chunk-overflow-2p64", ch(b"10000000000000005\r\nhello\r\n0\r\n\r\n"))
    a("chunk-16-f", ch(b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n"))
    a("chunk-leading-zeros", ch(b"00000000000000000005\r\nhello\r\n0\r\n\r\n"))
    a("chunk-ext", ch(b"5;a=b\r\nhello\r\n0\r\n\r\n"))
    a("chunk-ext-quoted", ch(b"5;a=\"b c\"\r\nhello\r\n0\r\n\r\n"))
    a("chunk-ext-bad", ch(b"5;a b\r\nhello\r\n0\r\n\r\n"))
    a("chunk-ext-bare-cr", ch(b"5;a\rb\r\nhello\r\n0\r\n\r\n"))
    a("chunk-ext-lf", ch(b"5;a\nhello\r\n0\r\n\r\n"))
    a("chunk-size-space", ch(b"5 \r\nhello\r\n0\r\n\r\n"))
    a("chunk-size-lead-space", ch(b" 5\r\nhello\r\n0\r\n\r\n"))
    a("chunk-size-lf", ch(b"5\nhello\r\n0\r\n\r\n"))
    a("chunk-data-lf", ch(b"5\r\nhello\n0\r\n\r\n"))
    a("chunk-data-nocrlf", ch(b"5\r\nhelloX0\r\n\r\n"))
    a("chunk-size-0x", ch(b"0x5\r\nhello\r\n0\r\n\r\n"))
    a("chunk-size-neg", ch(b"-5\r\nhello\r\n0\r\n\r\n"))
    a("chunk-size-underscore", ch(b"0_5\r\nhello\r\n0\r\n\r\n"))
    a("chunk-trailers", ch(b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"))
    a("chunk-trailer-cl", ch(b"5\r\nhello\r\n0\r\nContent-Length: 37\r\n\r\n" + SM))
    a("chunk-trailer-bare-lf", ch(b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n"))
    a("chunk-trailer-bad", ch(b"5\r\nhello\r\n0\r\nX T: 1\r\n\r\n"))
    a("chunk-last-lf", ch(b"5\r\nhello\r\n0\n\n"))
    a("chunk-last-no-crlf", ch(b"5\r\nhello\r\n0\r\n" + SM))
    a("chunk-smuggle-after", ch(b"0\r\n\r\n" + SM))
    a("chunk-many-small", ch(b"1\r\na\r\n" * 200 + b"0\r\n\r\n"))
    # target forms
    a("absolute-form", b"GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n")
    a("absolute-form-host-diff", b"GET http://other/abs HTTP/1.1\r\nHost: x\r\n\r\n")
    a("absolute-form-nohost", b"GET http://other/abs HTTP/1.1\r\n\r\n")
    a("absolute-form-https", b"GET https://other/abs HTTP/1.1\r\nHost: x\r\n\r\n")
    a("absolute-form-nopath", b"GET http://other HTTP/1.1\r\nHost: x\r\n\r\n")
    a("absolute-form-query", b"GET http://other?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    a("absolute-form-userinfo", b"GET http://u@other/abs HTTP/1.1\r\nHost: x\r\n\r\n")
    a("absolute-form-ftp", b"GET ftp://other/abs HTTP/1.1\r\nHost: x\r\n\r\n")
    a("absolute-form-empty-host", b"GET http:///abs HTTP/1.1\r\nHost: x\r\n\r\n")
    a("authority-form-get", b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n")
    a("connect", b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n")
    a("options-star", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    a("get-star", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n")
    a("target-no-slash", b"GET abc HTTP/1.1\r\nHost: x\r\n\r\n")
    # Host
    a("host-missing-11", b"GET / HTTP/1.1\r\n\r\n")
    a("host-missing-10", b"GET / HTTP/1.0\r\n\r\n")
    a("host-dup", b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
    a("host-dup-same", b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n")
    a("host-empty", b"GET / HTTP/1.1\r\nHost: \r\n\r\n")
    a("host-space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
    a("host-at", b"GET / HTTP/1.1\r\nHost: u@x\r\n\r\n")
    a("host-slash", b"GET / HTTP/1.1\r\nHost: x/y\r\n\r\n")
    a("host-port-bad", b"GET / HTTP/1.1\r\nHost: x:abc\r\n\r\n")
    a("host-list", b"GET / HTTP/1.1\r\nHost: x, y\r\n\r\n")
    a("host-dotdot", b"GET / HTTP/1.1\r\nHost: ..\r\n\r\n")
    a("host-backslash", b"GET / HTTP/1.1\r\nHost: x\\y\r\n\r\n")
    a("host-ipv6", b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")
    a("host-trailing-dot", b"GET / HTTP/1.1\r\nHost: x.\r\n\r\n")
    # versions / keep-alive
    a("http10-keepalive", b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    a("http10-no-keepalive-pipelined", b"GET /1 HTTP/1.0\r\n\r\nGET /SMUGGLED HTTP/1.0\r\n\r\n")
    a("http10-body", b"POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")
    a("http10-post-nocl", b"POST / HTTP/1.0\r\n\r\nhello")
    a("http10-keepalive-close", b"GET /1 HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\nGET /SMUGGLED HTTP/1.0\r\n\r\n")
    a("keep-alive-header", b"GET / HTTP/1.1\r\nHost: x\r\nKeep-Alive: timeout=1\r\n\r\n" + G)
    a("absolute-form-port", b"GET http://x:8080/p HTTP/1.1\r\nHost: x\r\n\r\n")
    a("absolute-form-ipv6", b"GET http://[::1]:8080/p HTTP/1.1\r\nHost: x\r\n\r\n")
    a("conn-close-pipelined", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + SM)
    a("conn-close-keepalive", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, keep-alive\r\n\r\n" + SM)
    a("conn-keepalive-close", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n" + SM)
    a("conn-close-two-fields", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n" + SM)
    a("conn-drops-field", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\r\n")
    a("conn-drops-host", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n")
    a("conn-drops-cl", req(b"Connection: content-length\r\nContent-Length: 5\r\n", b"hello"))
    a("proxy-connection-close", b"GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n\r\n" + G)
    a("version-1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n")
    a("version-2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
    a("version-3.0", b"GET / HTTP/3.0\r\nHost: x\r\n\r\n")
    a("version-1.10", b"GET / HTTP/1.10\r\nHost: x\r\n\r\n")
    a("version-01.1", b"GET / HTTP/01.1\r\nHost: x\r\n\r\n")
    a("version-lower", b"GET / http/1.1\r\nHost: x\r\n\r\n")
    a("version-trailing-space", b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n")
    a("version-0.9-like", b"GET / HTTP/0.9\r\nHost: x\r\n\r\n")
    a("http09", b"GET /\r\n")
    a("http09-crlfcrlf", b"GET /\r\n\r\n")
    a("pri-h2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    # methods
    a("method-lower", b"get / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("method-mixed", b"Get / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("method-unknown", b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("method-unknown-underscore", b"FOO_BAR / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("method-weird-char", b"G=T / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("method-rtsp-teardown", b"TEARDOWN / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("method-rtsp-after-empty-line", b"\r\nPLAY / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("method-head", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("method-trace", b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("method-query", b"QUERY / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    a("method-propfind", b"PROPFIND / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("double-space-reqline", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n")
    a("tab-reqline", b"GET\t/\tHTTP/1.1\r\nHost: x\r\n\r\n")
    a("leading-space-reqline", b" GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # field syntax
    a("ws-before-colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n")
    a("ws-before-colon-host", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n")
    a("tab-before-colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n")
    a("empty-name", b"GET / HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n")
    a("no-colon", b"GET / HTTP/1.1\r\nHost: x\r\nXYZ\r\n\r\n")
    a("colon-in-name-value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a:b\r\n\r\n")
    a("name-with-slash", b"GET / HTTP/1.1\r\nHost: x\r\nX/Y: a\r\n\r\n")
    a("name-underscore", b"GET / HTTP/1.1\r\nHost: x\r\nX_Y: a\r\n\r\n")
    a("value-trailing-ws", b"GET / HTTP/1.1\r\nHost: x\r\nX: a \t\r\n\r\n")
    a("value-empty", b"GET / HTTP/1.1\r\nHost: x\r\nX:\r\n\r\n")
    a("xff-forged", b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\n\r\n")
    a("expect-unknown", req(b"Expect: foo\r\nContent-Length: 5\r\n", b"hello"))
    a("expect-100", req(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b""),
      [req(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b""), b"hello"])
    a("expect-100-http10", req(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello", version=b"HTTP/1.0"))
    a("expect-100-body-at-once", req(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello"))
    a("expect-100-chunked", req(b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n", b""),
      [req(b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n", b""), b"5\r\nhello\r\n0\r\n\r\n"])
    a("expect-100-upper", req(b"Expect: 100-Continue\r\nContent-Length: 5\r\n", b"hello"))
    a("expect-100-twice", req(b"Expect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 5\r\n", b"hello"))
    a("expect-100-cl0", req(b"Expect: 100-continue\r\nContent-Length: 0\r\n", b"") + G)
    a("expect-100-nobody", b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n")
    a("upgrade-h2c", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + G)
    a("upgrade-unknown-no-conn", b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\n\r\n" + G)
    a("te-trailers-hdr", b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
    WS = b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    a("ws-plain", b"GET / HTTP/1.1\r\nHost: x\r\n" + WS + b"\r\n")
    a("ws-then-pipelined", b"GET / HTTP/1.1\r\nHost: x\r\n" + WS + b"\r\n" + SM)
    a("ws-with-cl-body", b"POST / HTTP/1.1\r\nHost: x\r\n" + WS + b"Content-Length: %d\r\n\r\n" % len(SM) + SM)
    a("ws-with-cl-body-then-get", b"POST / HTTP/1.1\r\nHost: x\r\n" + WS + b"Content-Length: 5\r\n\r\nhello" + SM)
    a("ws-with-chunked-body", b"POST / HTTP/1.1\r\nHost: x\r\n" + WS + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SM)
    a("ws-http10", b"GET / HTTP/1.0\r\n" + WS + b"\r\n" + SM)
    a("h2c-with-body", b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\nhello" + SM)
    a("upgrade-no-conn-body", b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\nhello" + SM)
    a("connect-with-body", b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\nContent-Length: 5\r\n\r\nhello" + SM)
    a("route-prefix-spoof", b"GET / HTTP/1.1\r\nHost: x\r\nX-Route-Prefix: admin\r\n\r\n")
    a("xfp-spoof", b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n")
    # sizes
    a("long-target-9k", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    a("long-target-20k", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    a("long-header-9k", b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
    a("many-headers-40k", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 90) for i in range(400)) + b"\r\n")
    a("many-small-headers-1000", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X%d: a\r\n" % i for i in range(1000)) + b"\r\n")
    a("long-method", b"A" * 5000 + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    # pipelining after an error
    a("pipe-error-middle", G + b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n" + SM)
    a("pipe-error-first", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n" + SM)
    a("pipe-bad-chunk-then-req", ch(b"zz\r\n\r\n") + SM)
    a("pipe-bad-version", G + b"GET /b HTTP/1\t.1\r\nHost: x\r\n\r\n")
    a("pipe-after-cl-body", req(b"Content-Length: 5\r\n", b"hello") + SM)
    a("incomplete-head", b"GET / HTTP/1.1\r\nHost: x\r\n")
    a("incomplete-body", req(b"Content-Length: 10\r\n", b"hello"))
    a("empty-conn-close", b"")
    return v

# -- Transfer-Encoding mutations ----------------------------------------------
def te_gadgets():
    """``{name: a header line}``: Transfer-Encoding, disguised."""
    g = {
        "nameprefix-space": b" Transfer-Encoding: chunked", "tab-value": b"Transfer-Encoding:\tchunked",
        "tab-both": b"Transfer-Encoding\t:\tchunked", "space-join": b"Transfer Encoding: chunked",
        "under-join": b"Transfer_Encoding: chunked", "space-colon": b"Transfer-Encoding : chunked",
        "two-spaces": b"Transfer-Encoding:  chunked", "vtab": b"Transfer-Encoding:\x0bchunked",
        "chunked-cow": b"Transfer-Encoding: chunked, cow", "cow-chunked": b"Transfer-Encoding: cow, chunked",
        "lf-wrap": b"Transfer-Encoding:\n chunked", "crlf-wrap": b"Transfer-Encoding:\r\n chunked",
        "quoted": b"Transfer-Encoding: \"chunked\"", "apos": b"Transfer-Encoding: 'chunked'",
        "chunk": b"Transfer-Encoding: chunk", "mixed-case": b"TrAnSFer-EnCODinG: cHuNkeD",
        "upper": b"TRANSFER-ENCODING: CHUNKED", "cr-suffix": b"Transfer-Encoding: chunked\r",
        "tab-suffix": b"Transfer-Encoding: chunked\t", "cow-then-chunked": b"Transfer-Encoding: cow\r\nTransfer-Encoding: chunked",
        "cr-in-name": b"Transfer\r-Encoding: chunked", "nested": b"Transfer-Encoding: cow chunked bar",
        "ff-value": b"Transfer-Encoding:\xffchunked", "accent": b"Transfer-Encoding: ch\x96nked",
        "x-cr": b"X: X\rTransfer-Encoding: chunked", "x-lf": b"X: X\nTransfer-Encoding: chunked",
        "identity-chunked": b"Transfer-Encoding: identity, chunked", "chunked-identity": b"Transfer-Encoding: chunked, identity",
        "identity-then-chunked": b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
        "pct": b"Transfer-%45ncoding: chunked", "backtick": b"Transfer-Encoding`chunked : chunked",
        "nel-colon": b"Transfer-Encoding\x85: chunked", "nbsp-colon": b"Transfer-Encoding\xa0: chunked",
        "shy-colon": b"Transfer-Encoding\xad: chunked", "shy-dash": b"Transfer\xadEncoding: chunked",
        "rfc2047": b"Transfer-Encoding: =?UTF-8?B?Y2h1bmtlZA==?=", "double-wrap": b"Transfer-Encoding:\r\n \r\n chunked",
        "gareth": b"Transfer-Encoding\n : chunked", "nbsp-value": b"Transfer-Encoding: \xa0chunked\xa0",
        "comma-first": b"Transfer-Encoding: ,chunked", "chunked-comma": b"Transfer-Encoding: chunked,",
    }
    for i in list(range(0x01, 0x20)) + list(range(0x7f, 0x100)):
        c = bytes([i])
        g["mid-%02x" % i] = b"Transfer-Encoding:" + c + b"chunked"
        g["post-%02x" % i] = b"Transfer-Encoding" + c + b": chunked"
        g["pre-%02x" % i] = c + b"Transfer-Encoding: chunked"
        g["end-%02x" % i] = b"Transfer-Encoding: chunked" + c
    return g

def te_mutations():
    """Each gadget before a Content-Length: CL.TE (a Content-Length framer
    forwards all, a chunked framer ends at ``0`` and reads /SMUGGLED) and
    TE.CL (the other way round)."""
    v = []
    for name, gadget in te_gadgets().items():
        # CL.TE: a CL-framer forwards all; a TE-framer ends at 0 and sees SMUGGLED
        body = b"0\r\n\r\n" + SM
        v.append(("clte-" + name, b"POST / HTTP/1.1\r\nHost: x\r\n" + gadget + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body))
        # TE.CL: a TE-framer reads the chunk; a CL-framer (CL 4) sees SMUGGLED
        chunk = b"%x\r\n" % len(SM) + SM + b"\r\n0\r\n\r\n"
        v.append(("tecl-" + name, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n" + gadget + b"\r\n\r\n" + chunk))
    return v

def cl_mutations():
    """Content-Length values a lax parser reads as a number."""
    v = []
    perms = {"plus": b"+%d", "minus": b"-%d", "pad": b"0%d", "bigpad": b"00000000000%d", "spacepad": b"0 %d",
             "e": b"%de0", "dec": b"%d.0", "commaprefix": b"0, %d", "commasuffix": b"%d, 0", "tab": b"\t%d\t",
             "hexish": b"%dh", "nul": b"%d\x00"}
    for name, fmt in perms.items():
        n = len(SM)
        v.append(("cl-" + name, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + (fmt % n) + b"\r\n\r\n" + SM))
    return v

def all_vectors():
    """Every vector."""
    return own() + cl_mutations() + te_mutations()


# -- what a proxy forwards --------------------------------------------------------

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_LINE = re.compile(rb"[A-Z][A-Z-]* [\x21-\x7e]+ HTTP/1\.1")
#: a ``%`` in a path not followed by two hex digits (RFC 3986 2.1)
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK = re.compile(rb"([0-9a-fA-F]{1,15})(;[^\r\n]*)?")
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]*)?")


def forwarded_problems(stream):
    """
    What is ambiguous in ``stream``, the bytes a proxy sent on one upstream
    connection: ``(problems, end)``, ``end`` where the last whole request
    ends.  Each request must be framed one way only, whatever reads it: a
    request line of HTTP/1.1, field lines of a token, a colon and a value
    without CTLs, at most one Content-Length (digits) and no
    Transfer-Encoding other than a single ``chunked`` beside it, chunks of
    hex sizes, one Host that is one authority (RFC 9112 3.2), and a path
    whose every ``%`` starts an escape (RFC 3986 2.1).  A
    request cut short at the end is not a problem here.
    """
    problems = []
    pos = end = 0
    while pos < len(stream):
        head_end = stream.find(b"\r\n\r\n", pos)
        if head_end < 0:
            break
        lines = stream[pos:head_end].split(b"\r\n")
        pos = head_end + 4
        if not _LINE.fullmatch(lines[0]):
            problems.append("request line %r" % lines[0][:60])
        elif _BAD_ESCAPE.search(lines[0].split(b" ")[1].partition(b"?")[0]):
            problems.append("percent-encoding %r" % lines[0][:60])
        lengths, codings, hosts = [], [], []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name) or _CTL.search(value):
                problems.append("field line %r" % line[:60])
                continue
            if name.lower() == b"content-length":
                lengths.append(value.strip(b" \t"))
            elif name.lower() == b"transfer-encoding":
                codings.append(value.strip(b" \t"))
            elif name.lower() == b"host":
                hosts.append(value.strip(b" \t"))
        if len(hosts) != 1 or not _HOST.fullmatch(hosts[0]) or b".." in hosts[0]:
            problems.append("Host %r" % hosts)
        if (lengths and codings) or len(lengths) > 1 or codings not in ([], [b"chunked"]):
            problems.append("framing %r %r" % (lengths, codings))
            break
        if codings:
            while True:
                nl = stream.find(b"\r\n", pos)
                if nl < 0:
                    return problems, end
                m = _CHUNK.fullmatch(stream, pos, nl)
                if m is None:
                    problems.append("chunk line %r" % stream[pos:nl][:30])
                    return problems, end
                size = int(m.group(1), 16)
                pos = nl + 2
                if size == 0:
                    trailers = stream.find(b"\r\n\r\n", pos - 2)
                    if trailers < 0:
                        return problems, end
                    pos = trailers + 4
                    break
                if stream[pos + size:pos + size + 2] not in (b"\r\n", stream[pos + size:]):
                    problems.append("chunk data not followed by CRLF")
                    return problems, end
                pos += size + 2
        elif lengths:
            if not lengths[0].isdigit():
                problems.append("Content-Length %r" % lengths[0])
                break
            pos += int(lengths[0])
        if pos <= len(stream):
            end = pos
    return problems, end
