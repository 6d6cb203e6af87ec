/* Live rows of one source with their vectors in one embedding space, read from the store
   table the Python writer fills. One view per (source, space); a view never mixes spaces:
   rows are filtered by the space tag, and a stored vector whose content hash no longer
   matches its source row (edited since it was embedded) is not served.
   The hash check is written inside COALESCE on purpose. As a bare equality (a second join key)
   Postgres estimates it as selective as an equality on unknown values and multiplies that with
   the id join's selectivity (it cannot know the two agree): one row expected per query, so a
   top-k by cosine distance through the view became a scan of the whole store plus a sort
   instead of the store's HNSW index scan. Inside COALESCE it gets the planner's default for
   an opaque boolean, and the view reads through the index (tests/test_views.py, bench/views.py). */
MODEL (
  name embed.@{source}__@{space},
  kind VIEW,
  blueprints @embed_space_blueprints('store'),
  audits (
    embed_vector_dims(expected_dims := @dims)
  )
);

SELECT
  v.source_id,
  @embed_tenant_columns(@{source}, s),
  v.content_sha256,
  v.space_fp,
  v.embedding,
  v.embedded_at
FROM @{store_schema}.@{store_table} AS v
JOIN @{src_schema}.@{src_table} AS s
  ON s.@{id_col} = v.source_id
WHERE
  v.space_fp = @fp
  AND COALESCE(@embed_content_hash(s.@{text_col}) = v.content_sha256, FALSE)
  AND @embed_live_filter(@{source}, s)
