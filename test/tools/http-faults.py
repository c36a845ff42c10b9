#!/usr/bin/env python3
"""http-faults: an HTTP proxy on 127.0.0.1:LISTEN in front of UPSTREAM (http://host:port) that
fails requests on purpose, so tests see how a client copes with a processor that misbehaves.

Usage: http-faults.py LISTEN UPSTREAM [RULE...]

Each request takes the next rule of the queue; with the queue empty it is forwarded as it is.
  500        answer 500 with a Stripe api_error; nothing forwarded
  429:SECS   answer 429 with Retry-After: SECS; nothing forwarded
  reset      reset the connection (RST); nothing forwarded
  drop       forward, then reset the connection instead of answering: the upstream did it
  delay:MS   forward, then hold the answer MS milliseconds before sending it
  RULE*N     the rule for the next N requests; RULE* for every request from then on

The control endpoint, on the same port, is not proxied:
  POST /__faults   the body's rules (space-separated) replace the queue
  GET  /__faults   {"pending":[...],"requests":[{"method","path","idempotency_key","action","t"}...]}
                   (t: when it came, in seconds on the monotonic clock)
SIGTERM or SIGINT stops it: it closes its socket and exits 0.
"""
import http.client
import http.server
import json
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}


class Faults:
    """The queue of rules and the log of the requests seen, shared by the handler threads."""

    def __init__(self, rules):
        self.lock = threading.Lock()
        self.pending = []
        self.requests = []
        self.set(rules)

    def set(self, rules):
        queue = []
        for r in rules:
            rule, star, n = r.partition("*")
            kind = rule.split(":")[0]
            if kind not in ("500", "429", "reset", "drop", "delay"):
                raise ValueError("unknown rule: " + r)
            if star and not n:
                queue.append((rule, None))  # for ever
            else:
                queue.append((rule, int(n) if star else 1))
        with self.lock:
            self.pending = queue

    def take(self, method, path, key):
        with self.lock:
            action = "forward"
            if self.pending:
                rule, n = self.pending[0]
                action = rule
                if n is not None:
                    if n <= 1:
                        self.pending.pop(0)
                    else:
                        self.pending[0] = (rule, n - 1)
            self.requests.append({"method": method, "path": path, "idempotency_key": key, "action": action,
                                  "t": round(time.monotonic(), 3)})
            return action

    def state(self):
        with self.lock:
            pending = [r if n == 1 else r + "*" + ("" if n is None else str(n)) for r, n in self.pending]
            return {"pending": pending, "requests": list(self.requests)}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as libcurl expects

    def log_message(self, fmt, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reset(self):
        """Closes the connection with an RST: the client sees a reset, not an answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def control(self, data):
        if self.command == "POST":
            try:
                self.server.faults.set(data.decode().split())
            except ValueError as e:
                return self.reply(400, json.dumps({"error": str(e)}).encode() + b"\n")
        self.reply(200, json.dumps(self.server.faults.state()).encode() + b"\n",
                   [("Content-Type", "application/json")])

    def forward(self, data):
        up = self.server.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=data if data else None, headers=headers)
        resp = conn.getresponse()
        out = resp.read()
        kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP and k.lower() != "content-length"]
        conn.close()
        return resp.status, out, kept

    def handle_any(self):
        data = self.body()
        if urllib.parse.urlsplit(self.path).path == "/__faults":
            return self.control(data)
        action = self.server.faults.take(self.command, self.path, self.headers.get("Idempotency-Key"))
        kind, _, arg = action.partition(":")
        if kind == "500":
            body = {"error": {"type": "api_error", "message": "An unknown error occurred (http-faults)"}}
            return self.reply(500, json.dumps(body).encode(), [("Content-Type", "application/json")])
        if kind == "429":
            body = {"error": {"type": "rate_limit_error", "code": "rate_limit",
                              "message": "Too many requests (http-faults)"}}
            return self.reply(429, json.dumps(body).encode(),
                              [("Content-Type", "application/json"), ("Retry-After", arg or "1")])
        if kind == "reset":
            return self.reset()
        try:
            status, out, headers = self.forward(data)
        except OSError as e:
            return self.reply(502, json.dumps({"error": {"type": "api_error", "message": str(e)}}).encode())
        if kind == "drop":
            return self.reset()
        if kind == "delay":
            time.sleep(int(arg or "0") / 1000)
        try:
            self.reply(status, out, headers)
        except OSError:
            self.close_connection = True  # the client gave up waiting

    do_GET = do_POST = do_DELETE = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client that went away mid-answer is what these tests do


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    upstream = urllib.parse.urlsplit(sys.argv[2])
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    server.upstream = upstream
    try:
        server.faults = Faults(sys.argv[3:])
    except ValueError as e:
        sys.exit("http-faults: " + str(e))

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
