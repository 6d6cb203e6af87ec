/* Live rows of one source with their vectors in one embedding space, read from the store
   table the Python writer fills. One view per (source, space); a view never mixes spaces:
   rows are filtered by the space tag, and a stored vector whose content hash no longer
   matches its source row (edited since it was embedded) is not served.
   The hash check is written as NULLIF(match, FALSE) IS NOT NULL on purpose: true exactly when
   the hashes are equal, and estimated the way the planner estimates an IS NOT NULL test it has
   no statistics for (0.995). As a bare equality (a second join key) Postgres multiplies its
   selectivity with the id join's (it cannot know the two agree): one row expected per query,
   and a top-k by cosine distance through the view became a scan of the whole store plus a
   sort. Inside COALESCE(match, FALSE) it was an opaque boolean (0.5): the view then expected
   half the rows the same read written by hand over the live rows expects, and for tenants near
   the planner's turning point (26k documents, 384-d: those holding 15-18 % of them) it sorted the
   tenant's rows where the hand-written read walks the HNSW index. With the IS NOT NULL form
   both expect the same rows and choose the same plan (tests/test_views.py, bench/views.py). */
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
  AND NULLIF(@embed_content_hash(s.@{text_col}) = v.content_sha256, FALSE) IS NOT NULL
  AND @embed_live_filter(@{source}, s)
