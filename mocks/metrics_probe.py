"""A metrics probe for E2E clusters: scrapes a Prometheus text endpoint periodically and serves
what it saw, the way the real system's Prometheus watches DataStorage in its E2E clusters.

    PROBE_TARGET=http://datastorage:9090/metrics python3 metrics_probe.py

Environment: PROBE_TARGET (required, an http URL), PROBE_INTERVAL_MS (default 1000),
LISTEN_PORT (default 8080).

GET /health          -> 200 once a scrape succeeded, else 503 with the last error
GET /api/v1/samples  -> 200 {"target", "scrapes_ok", "scrapes_failed", "last_error",
                        "last_scrape_unix", "samples": {"name{labels}": value}}
                        (`?prefix=NAME` keeps the samples whose name starts with NAME)
Standard library only.
"""

import json
import math
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_metrics(text):
    """Samples of a Prometheus text exposition: {"name{labels}": float}; comments skipped."""
    samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # `name{labels} value [timestamp]`; label values may hold spaces.
        end = line.rfind("}") + 1 if "{" in line else line.find(" ")
        if end <= 0:
            continue
        key, rest = line[:end], line[end:].split()
        try:
            value = float(rest[0])
        except (IndexError, ValueError):
            continue
        if math.isfinite(value):  # JSON has no NaN or infinities
            samples[key] = value
    return samples


class State:
    """What the probe saw, shared between the scraper and the handlers."""

    def __init__(self, target):
        self.lock = threading.Lock()
        self.target = target
        self.ok = 0
        self.failed = 0
        self.last_error = None
        self.last_scrape = None
        self.samples = {}

    def scrape(self):
        try:
            with urllib.request.urlopen(self.target, timeout=2) as r:
                samples = parse_metrics(r.read().decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError, ValueError) as e:
            with self.lock:
                self.failed += 1
                self.last_error = f"GET {self.target} failed: {e}"
            return
        with self.lock:
            self.ok += 1
            self.last_error = None
            self.last_scrape = time.time()
            self.samples = samples

    def report(self, prefix=""):
        with self.lock:
            return {
                "target": self.target,
                "scrapes_ok": self.ok,
                "scrapes_failed": self.failed,
                "last_error": self.last_error,
                "last_scrape_unix": self.last_scrape,
                "samples": {k: v for k, v in self.samples.items() if k.startswith(prefix)},
            }


class Handler(BaseHTTPRequestHandler):
    server_version = "metrics-probe/1"
    state = None

    def log_message(self, fmt, *args):
        sys.stderr.write(f"metrics-probe: {self.address_string()} {fmt % args}\n")

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/health":
            r = self.state.report()
            if r["scrapes_ok"]:
                self.send_json(200, {"status": "ok", "scrapes_ok": r["scrapes_ok"]})
            else:
                self.send_json(503, {"status": "waiting for a first scrape", "last_error": r["last_error"]})
        elif url.path == "/api/v1/samples":
            prefix = urllib.parse.parse_qs(url.query).get("prefix", [""])[0]
            self.send_json(200, self.state.report(prefix))
        else:
            self.send_json(404, {"error": f"no route {url.path}"})


def main():
    target = os.environ.get("PROBE_TARGET", "").strip()
    if not target.startswith(("http://", "https://")):
        print("metrics-probe: set PROBE_TARGET to the URL to scrape, e.g. "
              "http://datastorage:9090/metrics", file=sys.stderr)
        return 2
    try:
        interval = int(os.environ.get("PROBE_INTERVAL_MS", "1000")) / 1000
        port = int(os.environ.get("LISTEN_PORT", "8080"))
    except ValueError as e:
        print(f"metrics-probe: PROBE_INTERVAL_MS and LISTEN_PORT are whole numbers: {e}", file=sys.stderr)
        return 2
    state = State(target)

    def scrape_forever():
        while True:
            state.scrape()
            time.sleep(interval)

    threading.Thread(target=scrape_forever, daemon=True).start()
    Handler.state = state
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    # PID 1 in a container gets no default SIGTERM action: stop on it explicitly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"metrics-probe: scraping {target} every {interval}s; listening on :{port}",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
