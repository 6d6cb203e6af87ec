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


def rewrite_mapping(text: str, gateway: str, var: str, mapping: dict[str, str | None]) -> str:
    """config.yaml text with gateways.<gateway>.variables.<var>.<key> set per mapping (None
    removes the key). A missing block is added after embed_active; an emptied one is removed."""
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
    try:
        b, bi = _find(lines, v + 1, _block_end(lines, v, vi), var, ai)
    except KeyError:
        if all(val is None for val in mapping.values()):
            return text
        b, bi = _block_end(lines, a, ai), ai
        lines[b:b] = [f"{' ' * bi}{var}:\n"]
    end = _block_end(lines, b, bi)
    todo = dict(mapping)
    kept: list[str] = []
    for line in lines[b + 1 : end]:
        m = _KEY.match(line.rstrip("\n"))
        if m and m["key"] in todo:
            value = todo.pop(m["key"])
            if value is not None:
                comment = f"  {m['comment']}" if m["comment"] else ""
                kept.append(f"{m['indent']}{m['key']}: {value}{comment}\n")
        else:
            kept.append(line)
    kept += [f"{' ' * (bi + 2)}{k}: {val}\n" for k, val in todo.items() if val is not None]
    if not any(_KEY.match(x.rstrip("\n")) for x in kept):
        lines[b:end] = []  # nothing left in the block: drop its header too
    else:
        lines[b + 1 : end] = kept
    return "".join(lines)


def set_variables(cfg: Config, mappings: dict[str, dict[str, str | None]]) -> tuple[Config, str]:
    """Write gateway variable mappings (e.g. embed_active) into the project's config.yaml;
    returns (the reloaded config, the previous file text, for `restore`). Replaced atomically,
    and put back as it was when the reloaded file does not say what was asked."""
    path = Path(cfg.project) / CONFIG_FILE
    before = path.read_text()
    after = before
    for var, mapping in mappings.items():
        after = rewrite_mapping(after, cfg.gateway, var, mapping)
    _write(path, after)
    try:
        new = Config.load(cfg.project, cfg.gateway)
        got = {var: {k: (new.variables.get(var) or {}).get(k) for k in m} for var, m in mappings.items()}
    except EmbedError:
        got = {}
    if got != mappings:
        _write(path, before)
        raise EmbedError(f"{CONFIG_FILE}: rewriting {', '.join(mappings)} did not take; file left unchanged")
    return new, before


def set_active(cfg: Config, mapping: dict[str, str]) -> tuple[Config, str]:
    """Point each source's `embed.<source>_active` view at a space (see set_variables)."""
    return set_variables(cfg, {"embed_active": dict(mapping)})


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
