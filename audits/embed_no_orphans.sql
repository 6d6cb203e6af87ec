/* No stored vector belongs to a source row that is gone or no longer live (deleted, or
   soft-deleted since it was embedded): `embed sync` removes them. Checked on the active view
   of a non-legacy space: a cutover gate. */
AUDIT (
  name embed_no_orphans,
  blocking true
);

SELECT v.source_id
FROM @vectors_schema.@vectors_table AS v
WHERE
  @enabled
  AND NOT EXISTS (
    SELECT 1
    FROM @source_schema.@source_table AS s
    WHERE s.@id_column = v.source_id AND @embed_live_filter(@source_name, s)
  )
