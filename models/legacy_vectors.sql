/* Live rows of one source with the vectors already in its own vector column: the legacy
   space bound to that column by the gateway's `embed_legacy_space`. */
MODEL (
  name embed.@{source}__@{space},
  kind VIEW,
  blueprints @embed_space_blueprints('legacy'),
  audits (
    embed_vector_dims(expected_dims := @dims)
  )
);

SELECT
  s.@{id_col} AS source_id,
  @embed_tenant_columns(@{source}, s),
  @embed_content_hash(s.@{text_col}) AS content_sha256,
  @fp::TEXT AS space_fp,
  s.@{vec_col} AS embedding,
  NULL::TIMESTAMPTZ AS embedded_at
FROM @{src_schema}.@{src_table} AS s
WHERE
  NOT s.@{vec_col} IS NULL
  AND @embed_live_filter(@{source}, s)
