"""
REDbot (``pip install redbot``: the ``redbot`` command, 2.7.1 on 2026-12-06)
on the same resources directly, through tproxy (started the README way, one
static peer) and through nginx (``h1_rig.NGINX_CONF``), printing
the notes that differ from nginx's.  Two origins: an nginx serving static
files (ETag, Last-Modified, ranges, gzip) and ``h1_rig.py``'s
recording backend (a bare ``200`` with a Content-Length and nothing else: no
Date, no Server).  Not a test: an audit (nginx must be installed)::

    python bench/tools/redbot_compare.py --redbot /path/to/venv/bin/redbot
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from h1_rig import NGINX_CONF, free_base, start_tproxy, wait_port  # noqa: E402

ORIGIN = """daemon off;
worker_processes 1;
pid {run}/origin.pid;
error_log {run}/origin.error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    include /etc/nginx/mime.types;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    gzip on;
    gzip_types text/plain application/json;
    gzip_min_length 0;
    server {{ listen 127.0.0.1:{port}; root {run}/www; }}
}}
"""

FILES = {"index.html": "<html><head><title>t</title></head><body>hello</body></html>\n",
         "a.txt": "x" * 3000 + "\n", "data.json": '{"a": 1}\n'}


def notes(redbot, url):
    """REDbot's note lines for ``url`` (its text output, headers dropped)."""
    out = subprocess.run([redbot, "-o", "text", url], capture_output=True, text=True,
                         timeout=120).stdout
    found = [x.strip() for x in out.splitlines() if x.strip().startswith("* ") and not x.endswith(":")]
    # the numbers that change run to run
    return {re.sub(r"\d+ (seconds?|minutes?)", "N \\1", x) for x in found}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redbot", default=shutil.which("redbot") or "redbot")
    args = p.parse_args()
    run = tempfile.mkdtemp(prefix="redbot-")
    os.chmod(run, 0o755)
    os.makedirs(os.path.join(run, "www"))
    for name, text in FILES.items():
        with open(os.path.join(run, "www", name), "w") as f:
            f.write(text)
    base = free_base(8)
    origin, tp, ng, admin, rec, tp2, ng2, admin2 = range(base, base + 8)
    procs = []
    try:
        with open(os.path.join(run, "origin.conf"), "w") as f:
            f.write(ORIGIN.format(run=run, port=origin))
        procs.append(subprocess.Popen(["nginx", "-c", os.path.join(run, "origin.conf")]))
        procs.append(subprocess.Popen([sys.executable, os.path.join(os.path.dirname(
            os.path.abspath(__file__)), "h1_rig.py"), "--backend", str(rec),
            os.path.join(run, "recorded.log")]))
        for sub, front, back in (("static", ng, origin), ("recording", ng2, rec)):
            os.makedirs(os.path.join(run, sub))
            with open(os.path.join(run, sub, "nginx.conf"), "w") as f:
                f.write(NGINX_CONF.format(run=os.path.join(run, sub), backend=back, port=front,
                                          extra=""))
            procs.append(subprocess.Popen(["nginx", "-c", os.path.join(run, sub, "nginx.conf")]))
        for sub, port, adm, back in (("static", tp, admin, origin), ("recording", tp2, admin2, rec)):
            procs.append(start_tproxy(os.path.join(run, sub), port, adm,
                                      upstreams={"default": {"peers": ["127.0.0.1:%d" % back]}}))
        for port in range(base, base + 8):
            wait_port(port)
        total = 0
        for label, direct, pair, paths in (("static", origin, (tp, ng), FILES),
                                           ("recording", rec, (tp2, ng2), ["r"])):
            for path in paths:
                seen = {who: notes(args.redbot, "http://127.0.0.1:%d/%s" % (port, path))
                        for who, port in (("direct", direct), ("tproxy", pair[0]), ("nginx", pair[1]))}
                only_tp, only_ng = seen["tproxy"] - seen["nginx"], seen["nginx"] - seen["tproxy"]
                total += len(only_tp) + len(only_ng)
                print("== %s /%s: %d notes through tproxy, %d through nginx, %d direct" % (
                    label, path, len(seen["tproxy"]), len(seen["nginx"]), len(seen["direct"])))
                for x in sorted(only_tp):
                    print("  tproxy only: %s" % x)
                for x in sorted(only_ng):
                    print("  nginx only:  %s" % x)
        print("%d notes differ" % total)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait()


if __name__ == "__main__":
    main()
