/* Labelled sources: the candidate's nDCG is not worse than the legacy space's beyond the margin (CI).
   A cutover gate: SQL in embed/gates.py, shared with the before_all guard and `embed gate`. */
AUDIT (
  name embed_shadow_ndcg,
  blocking true
);

SELECT g.*
FROM (@embed_gate('shadow_ndcg', @source_name, @space_fp)) AS g
WHERE
  @enabled AND NOT g.passed
