"""A folder served on loopback with HTTP range requests: what ``viewer.html`` needs locally.

The tile viewer reads ``buildings.pmtiles`` a few kilobytes at a time (``Range: bytes=a-b``),
which browsers refuse for pages opened from disk and which Python's ``http.server`` does not
answer (it always sends the whole file). This handler answers a single byte range with
``206 Partial Content`` (``416`` when it lies past the end) and everything else as
``http.server`` does; the server binds 127.0.0.1 only, so nothing leaves the machine.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
from functools import partial
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` plus single byte ranges (all the pmtiles reader asks for)."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,  # noqa: RUF012 - the base's name
                      ".pmtiles": "application/vnd.pmtiles", ".tif": "image/tiff"}

    def log_message(self, format: str, *args: object) -> None:
        if os.environ.get("URBANFABRIC_SERVE_LOG"):
            super().log_message(format, *args)

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def do_GET(self) -> None:
        spec = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not spec or not path.is_file():
            super().do_GET()
            return
        m = _RANGE.match(spec.strip())
        size = path.stat().st_size
        if not m or (not m.group(1) and not m.group(2)):
            super().do_GET()  # several ranges or a malformed header: the whole file, as RFC 9110 allows
            return
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # "bytes=-N": the last N bytes
            start, end = max(0, size - int(m.group(2))), size - 1
        if start >= size or start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with path.open("rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


def serve_folder(folder: Path | str, port: int = 0) -> http.server.ThreadingHTTPServer:
    """A server for ``folder`` on 127.0.0.1 (``port`` 0 = a free one), not yet serving: call
    ``serve_forever`` (or :func:`serve_in_background`) and ``shutdown`` when done."""
    handler = partial(RangeRequestHandler, directory=str(Path(folder).resolve()))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def serve_in_background(folder: Path | str, port: int = 0) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``folder`` from a daemon thread; returns the server and its base URL."""
    server = serve_folder(folder, port)
    threading.Thread(target=server.serve_forever, name="urbanfabric-serve", daemon=True).start()
    host, bound = server.server_address[:2]
    return server, f"http://{host!s}:{bound}/"

