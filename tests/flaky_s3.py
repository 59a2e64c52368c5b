"""A throttling S3 endpoint for tests: an HTTP proxy in front of moto_server that answers ``503 SlowDown``.

Each distinct request (method, path and query) is refused ``slowdowns`` times with S3's own
``SlowDown`` error, then forwarded to the real endpoint, so a client passes only if it retries
each request more than ``slowdowns`` times. Standard library only; one thread per connection.
"""
from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b'<Message>Please reduce your request rate.</Message><RequestId>flaky-s3</RequestId></Error>')
#: Hop-by-hop headers: not forwarded.
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class FlakyS3:
    """``with FlakyS3("http://127.0.0.1:5055", slowdowns=3) as proxy:`` then use ``proxy.url``.

    ``proxy.refused``: how many SlowDowns were answered; ``proxy.passed``: requests forwarded.
    """

    def __init__(self, upstream: str, slowdowns: int):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.slowdowns = slowdowns
        self.seen: Counter = Counter()
        self.refused = 0
        self.passed = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FlakyS3:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"   # keep-alive, and "Expect: 100-continue" answered

            def log_message(self, *args):   # quiet
                pass

            def body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass   # trailers
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def handle_one(self) -> None:
                data = self.body()   # read whole, refused or not: the connection stays usable
                key = (self.command, self.path)
                with proxy.lock:
                    proxy.seen[key] += 1
                    refuse = proxy.seen[key] <= proxy.slowdowns
                    if refuse:
                        proxy.refused += 1
                    else:
                        proxy.passed += 1
                if refuse:
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(SLOWDOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(SLOWDOWN)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"expect"}}
                if data or "Content-Length" in self.headers:
                    headers["Content-Length"] = str(len(data))
                conn.request(self.command, self.path, body=data or None, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP | {"content-length"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload) if self.command != "HEAD" else
                                                       resp.getheader("Content-Length") or 0))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

        return Handler
