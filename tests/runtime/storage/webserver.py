"""A real ``http.server`` on loopback that serves a directory and misbehaves on request.

The first path segment picks the behaviour; the rest names a file below the web root:

    /files/<path>          the file, as SimpleHTTPRequestHandler serves it
    /r<k>/<path>           k redirects (302) down to /r0/<path>, which serves the file
    /to/<scheme>/<path>    302 to <scheme>://127.0.0.1:<port>/files/<path>
    /trickle/<path>        the file's headers, then one byte every TRICKLE_S seconds
    /stall/<path>          the headers and STALL_BYTES bytes, then nothing until the server stops
    /cut/<path>            the full Content-Length, then all but CUT_BYTES bytes, then close

The same routes answer S3 GETs (boto3 with path-style addressing sends ``/<bucket>/<key>``):
``s3://trickle/<path>`` is ``/trickle/<path>``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TRICKLE_S = 0.05
STALL_BYTES = 3
CUT_BYTES = 5


class MisbehavingHandler(SimpleHTTPRequestHandler):
    root: Path
    stop: threading.Event

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(self.root), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        _, route, *rest = self.path.split("?")[0].split("/")
        rel = "/".join(rest)
        if route == "files" or route == "r0":
            self.path = "/" + rel
            super().do_GET()
        elif route.startswith("r") and route[1:].isdigit():
            self._redirect(f"/r{int(route[1:]) - 1}/{rel}")
        elif route == "to":
            scheme, _, path = rel.partition("/")
            port = self.headers.get("Host", "").rpartition(":")[2]
            self._redirect(f"{scheme}://127.0.0.1:{port}/files/{path}")
        elif route in ("trickle", "stall", "cut"):
            try:
                self._misbehave(route, self.root / rel)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
                self.close_connection = True
        else:
            self.send_error(404)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _misbehave(self, route: str, path: Path) -> None:
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.flush()
        if route == "trickle":
            for i in range(len(data)):
                if self.stop.wait(TRICKLE_S):
                    return
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
        elif route == "stall":
            self.wfile.write(data[:STALL_BYTES])
            self.wfile.flush()
            self.stop.wait(60)
        else:
            self.wfile.write(data[:-CUT_BYTES])
            self.wfile.flush()
            self.close_connection = True


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on a free loopback port; yields the base URL ``http://127.0.0.1:<port>``."""
    stop = threading.Event()
    handler = type("Handler", (MisbehavingHandler,), {"root": root, "stop": stop})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join()
