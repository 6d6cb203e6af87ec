"""Rewrite one gateway's `embed_active` mapping in config.yaml, keeping every other byte.

config.yaml is the operator's file (comments, order, Jinja connection strings), so a cutover
edits only the `<source>: <space>` lines under `gateways.<gw>.variables.embed_active` and
checks the result by loading it back; a YAML round-trip would reformat the whole file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from embed.config import CONFIG_FILE, Config
from embed.errors import EmbedError

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):\s*(?P<value>[^#\s]*)\s*(?P<comment>#.*)?$")


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the block opened at `start`: up to the next content line indented <= `indent`."""
    for i in range(start + 1, len(lines)):
        body = lines[i].strip()
        if body and not body.startswith("#") and len(lines[i]) - len(lines[i].lstrip(" ")) <= indent:
            return i
    return len(lines)


def _find(lines: list[str], lo: int, hi: int, key: str, indent: int | None = None) -> tuple[int, int]:
    for i in range(lo, hi):
        m = _KEY.match(lines[i])
        if m and m["key"] == key and (indent is None or len(m["indent"]) == indent):
            return i, len(m["indent"])
    raise KeyError(key)


def rewrite_active(text: str, gateway: str, mapping: dict[str, str]) -> str:
    """config.yaml text with gateways.<gateway>.variables.embed_active.<source> set per mapping."""
    lines = text.splitlines(keepends=True)
    try:
        g, gi = _find(lines, 0, len(lines), "gateways", 0)
        gw, gwi = _find(lines, g + 1, _block_end(lines, g, gi), gateway)
        v, vi = _find(lines, gw + 1, _block_end(lines, gw, gwi), "variables")
        a, ai = _find(lines, v + 1, _block_end(lines, v, vi), "embed_active")
    except KeyError as e:
        raise EmbedError(
            f"{CONFIG_FILE}: gateway {gateway!r} has no variables.embed_active block ({e.args[0]} missing); "
            "add one with a line per source"
        ) from None
    end = _block_end(lines, a, ai)
    todo = dict(mapping)
    child_indent = ai + 2
    for i in range(a + 1, end):
        m = _KEY.match(lines[i].rstrip("\n"))
        if m and m["key"] in todo:
            child_indent = len(m["indent"])
            comment = f"  {m['comment']}" if m["comment"] else ""
            lines[i] = f"{m['indent']}{m['key']}: {todo.pop(m['key'])}{comment}\n"
    insert = [f"{' ' * child_indent}{src}: {space}\n" for src, space in todo.items()]
    lines[end:end] = insert
    return "".join(lines)


def set_active(cfg: Config, mapping: dict[str, str]) -> tuple[Config, str]:
    """Write the new mapping into the project's config.yaml; returns (the reloaded config, the
    previous file text, for `restore`). The file is replaced atomically."""
    path = Path(cfg.project) / CONFIG_FILE
    before = path.read_text()
    after = rewrite_active(before, cfg.gateway, mapping)
    _write(path, after)
    new = Config.load(cfg.project, cfg.gateway)
    wrong = {s: new.active_space(s).name for s, sp in mapping.items() if new.active_space(s).name != sp}
    if wrong:
        _write(path, before)
        raise EmbedError(f"{CONFIG_FILE}: rewriting embed_active did not take ({wrong}); file left unchanged")
    return new, before


def restore(cfg: Config, text: str) -> None:
    _write(Path(cfg.project) / CONFIG_FILE, text)


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
