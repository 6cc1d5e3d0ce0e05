"""A local HTTP server on 127.0.0.1 for download tests: Range support and failure switches."""
from __future__ import annotations

import re
import socket
from http.server import BaseHTTPRequestHandler


class Handler(BaseHTTPRequestHandler):
    """Serves `server.files`; each request consumes one action from `server.script`."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        action = srv.script.pop(0) if srv.script else srv.default
        data = srv.files.get(self.path)
        if action in ("404", "503") or data is None:
            self.send_error(int(action) if action in ("404", "503") else 404)
            return
        start = 0
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if match and action != "ignore_range":
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        if not srv.no_length:
            self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if action == "drop":  # close the socket half-way through the body
            self.wfile.write(body[:srv.drop_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)
