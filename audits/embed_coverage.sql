/* Every live source row with text has a vector in the space (or a recorded reason why it
   cannot have one). Checked on the active view of a non-legacy space: a cutover gate. */
AUDIT (
  name embed_coverage,
  blocking true
);

SELECT s.@id_column
FROM @source_schema.@source_table AS s
WHERE
  @enabled
  AND @embed_live_filter(@source_name, s)
  AND BTRIM(COALESCE(s.@text_column, '')) <> ''
  AND NOT EXISTS (
    SELECT 1 FROM @this_model AS a WHERE a.source_id = s.@id_column
  )
  AND NOT EXISTS (
    SELECT 1 FROM embed_store.skipped AS k
    WHERE k.source = @source_name
      AND k.space_fp = @space_fp
      AND k.source_id = s.@id_column::TEXT
      AND k.content_sha256 = @embed_content_hash(s.@text_column)
  )
