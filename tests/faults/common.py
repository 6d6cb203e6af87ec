"""Small pieces the suite's background processes share (simulator, reader, endpoint, driver)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector


def connect_until(url: str, app: str, errors: Counter[str], stopped: Callable[[], bool], *,
                  autocommit: bool = False) -> psycopg.Connection:
    """Connect, retrying with backoff for as long as it takes (the server may be restarting on
    purpose); counts each failure in `errors`; exits the process quietly once `stopped()`."""
    delay = 0.1
    while not stopped():
        try:
            conn = psycopg.connect(url, application_name=app, connect_timeout=5, autocommit=autocommit)
            register_vector(conn)
            return conn
        except psycopg.OperationalError as e:
            errors[f"connect:{type(e).__name__}"] += 1
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise SystemExit(0)


def write_json(path: Path, data: Any) -> None:
    """Replace `path` atomically: a reader polling it never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
