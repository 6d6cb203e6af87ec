"""The embed_store schema as named, ordered migrations (as `llm` keeps its own).

Each step runs once per database, in order, in the transaction of whoever needs the store first
(`embed init`, or a command meeting a store an older embed made), and is recorded in
embed_store.migrations. A new table or column is a new step at the end, never an edit of one
that shipped: a store made by this version and upgraded by the next gets exactly the steps it
lacks. The steps are idempotent DDL, so a store made before this table existed adopts them.
The per-(source, space) store tables are not here: they follow config.yaml (embed.store.init).
"""

from __future__ import annotations

import psycopg

SCHEMA = "embed_store"

# name -> DDL, a str.format template ({SCHEMA}; literal braces doubled)
STEPS: tuple[tuple[str, str], ...] = (
    ("001_bookkeeping", """
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.spaces (
    fingerprint text PRIMARY KEY CHECK (fingerprint ~ '^[0-9a-f]{{64}}$'),
    name        text NOT NULL,
    dims        integer NOT NULL CHECK (dims > 0),
    spec        jsonb NOT NULL,
    state       text NOT NULL DEFAULT 'declared',
    declared_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.events (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor    text NOT NULL,
    kind     text NOT NULL,
    space_fp text,
    source   text,
    outcome  text NOT NULL CHECK (outcome IN ('ok', 'failed', 'blocked', 'info')),
    reason   text,
    details  jsonb NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.runs (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    space_fp    text NOT NULL,
    source      text,
    actor       text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
    params      jsonb NOT NULL DEFAULT '{{}}',
    stats       jsonb NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.smoke_runs (
    id             bigserial PRIMARY KEY,
    space_fp       text NOT NULL,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor          text NOT NULL,
    passed         boolean NOT NULL,
    endpoint_class text NOT NULL,
    evidence       jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.skipped (
    source         text NOT NULL,
    space_fp       text NOT NULL,
    source_id      text NOT NULL,
    content_sha256 bytea NOT NULL,
    reason         text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, space_fp, source_id)
);
-- Shadow validation (embed.shadow.run): one row per run, the result dict (ids and numbers only),
-- and its numbers in long form so the gate audits (audits/embed_shadow_*.sql) can read them.
CREATE TABLE IF NOT EXISTS {SCHEMA}.shadow_runs (
    id            bigserial PRIMARY KEY,
    started_at    timestamptz NOT NULL,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor         text NOT NULL,
    source        text NOT NULL,
    baseline_fp   text NOT NULL CHECK (baseline_fp ~ '^[0-9a-f]{{64}}$'),
    candidate_fps text[] NOT NULL CHECK (cardinality(candidate_fps) > 0),
    params        jsonb NOT NULL DEFAULT '{{}}',
    result        jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_runs_source_started ON {SCHEMA}.shadow_runs (source, started_at DESC);
CREATE TABLE IF NOT EXISTS {SCHEMA}.shadow_metrics (
    run_id      bigint NOT NULL REFERENCES {SCHEMA}.shadow_runs (id) ON DELETE CASCADE,
    space_fp    text NOT NULL,
    slice       text NOT NULL,
    slice_value text NOT NULL,
    metric      text NOT NULL,
    n           integer,
    value       double precision,
    ci_low      double precision,
    ci_high     double precision,
    PRIMARY KEY (run_id, space_fp, slice, slice_value, metric)
);
"""),
    # backups taken by `embed backup` (a verified one unlocks gate and retire) and pins that hold
    # a space's vectors past their retention window
    ("002_backups_and_pins", """
CREATE TABLE IF NOT EXISTS {SCHEMA}.backups (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    path        text NOT NULL,
    manifest    jsonb NOT NULL CHECK (manifest ? 'backup_id'),
    verified    boolean NOT NULL DEFAULT false,
    verified_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS backups_backup_id ON {SCHEMA}.backups ((manifest ->> 'backup_id'));
CREATE TABLE IF NOT EXISTS {SCHEMA}.pins (
    space_fp text PRIMARY KEY,
    name     text NOT NULL,
    reason   text NOT NULL CHECK (length(reason) > 0),
    actor    text NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""),
    ("003_leases", """
CREATE TABLE IF NOT EXISTS {SCHEMA}.leases (
    source     text NOT NULL,
    space_fp   text NOT NULL,
    kind       text NOT NULL,
    gen        integer NOT NULL,
    chunk      integer NOT NULL,
    lo         text,
    hi         text,
    created_at timestamptz NOT NULL DEFAULT now(),
    holder     text,
    run_id     bigint,
    claimed_at timestamptz,
    done_at    timestamptz,
    rows_written integer NOT NULL DEFAULT 0,
    PRIMARY KEY (source, space_fp, kind, gen, chunk)
)
"""),
    ("004_inplace_columns", """
CREATE TABLE IF NOT EXISTS {SCHEMA}.inplace_columns (
    source      text NOT NULL,
    column_name text NOT NULL,
    space_fp    text NOT NULL CHECK (space_fp ~ '^[0-9a-f]{{64}}$'),
    previous_fp text,            -- live column only: the space it held before the last swap
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, column_name)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.inplace_staged (
    source         text NOT NULL,
    space_fp       text NOT NULL,
    source_id      text NOT NULL,
    content_sha256 bytea NOT NULL,
    row_xmin       xid,          -- the source row version the record was made for
    PRIMARY KEY (source, space_fp, source_id)
);
"""),
    ("005_serving", """
CREATE TABLE IF NOT EXISTS {SCHEMA}.serving (
    source        text PRIMARY KEY,
    space_fp      text NOT NULL CHECK (space_fp ~ '^[0-9a-f]{{64}}$'),
    mode          text CHECK (mode IN ('view', 'honcho-inplace')),  -- NULL: never switched
    legacy_column text,
    from_fp       text,
    from_mode     text,
    views_fp      text,
    target_fp     text,
    told_fp       text,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    event_id      bigint
)
"""),
    # embed verify's watch (embed.verify): the row version (xmin) of each row whose vector last
    # passed the check, so a pass reads only rows written since
    ("006_verified", """
CREATE TABLE IF NOT EXISTS {SCHEMA}.verified (
    source    text NOT NULL,
    space_fp  text NOT NULL,
    source_id text NOT NULL,
    row_xmin  xid NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, space_fp, source_id)
)
"""),
    # The in-place swap's change queue (embed.cutover.inplace_queue): a trigger on each source
    # table with a staged or parked column queues the ids Honcho writes, per space with a column
    # there, so the swap's exclusive lock checks only those rows. SECURITY DEFINER: Honcho's own
    # role writes the queue through it without any privilege on embed_store.
    ("007_inplace_changes", """
CREATE TABLE IF NOT EXISTS {SCHEMA}.inplace_changed (
    source    text NOT NULL,
    space_fp  text NOT NULL,
    source_id text NOT NULL,
    waiting   boolean NOT NULL DEFAULT false,  -- unchanged since checked, only waiting for a vector
    PRIMARY KEY (source, space_fp, source_id)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.inplace_triggers (
    source       text PRIMARY KEY,
    table_name   text NOT NULL,   -- as config.yaml names it (schema.table)
    trigger_name text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    complete_fps text[] NOT NULL DEFAULT '{{}}'  -- spaces a full pass checked since installed_at
);
CREATE OR REPLACE FUNCTION {SCHEMA}.inplace_queue() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sid text;
BEGIN
    EXECUTE format('SELECT ($1).%I::text', TG_ARGV[1]) INTO sid USING NEW;
    INSERT INTO {SCHEMA}.inplace_changed (source, space_fp, source_id)
    SELECT DISTINCT TG_ARGV[0], c.space_fp, sid FROM (
        SELECT k.space_fp FROM {SCHEMA}.inplace_columns AS k WHERE k.source = TG_ARGV[0]
        UNION ALL  -- the live column's space until a swap records it (stage's argument)
        SELECT TG_ARGV[2] WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.inplace_columns AS k
                                            WHERE k.source = TG_ARGV[0] AND k.column_name = TG_ARGV[3])) AS c
    ON CONFLICT (source, space_fp, source_id) DO UPDATE SET waiting = false WHERE {SCHEMA}.inplace_changed.waiting;
    RETURN NULL;
END
$$;
"""),
    # embed verify's watch: the newest passing check per (source, space) is an index read, so a
    # pass with nothing new reads only the rows whose written_at columns moved since (embed.verify)
    ("009_verified_at", """
CREATE INDEX IF NOT EXISTS verified_at ON {SCHEMA}.verified (source, space_fp, at)
"""),
)

_TABLE = """CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.migrations (
    name text PRIMARY KEY,
    at   timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the steps this database lacks, in order, under one advisory lock (two first runs
    agree); the names applied now."""
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('embed_store.migrations'))")
        conn.execute(_TABLE.format(SCHEMA=SCHEMA))
        done = {r[0] for r in conn.execute(f"SELECT name FROM {SCHEMA}.migrations").fetchall()}
        for name, ddl in STEPS:
            if name not in done:
                conn.execute(ddl.format(SCHEMA=SCHEMA))
                conn.execute(f"INSERT INTO {SCHEMA}.migrations (name) VALUES (%s)", (name,))
                applied.append(name)
    return applied
