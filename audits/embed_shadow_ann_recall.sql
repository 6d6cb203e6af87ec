/* The space's HNSW index finds what an exact scan finds under the same tenant filters.
   A cutover gate: SQL in embed/gates.py, shared with the before_all guard and `embed gate`. */
AUDIT (
  name embed_shadow_ann_recall,
  blocking true
);

SELECT g.*
FROM (@embed_gate('shadow_ann_recall', @source_name, @space_fp)) AS g
WHERE
  @enabled AND NOT g.passed
