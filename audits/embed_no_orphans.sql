/* No stored vector belongs to a source row that is gone or no longer live (deleted, or
   soft-deleted since it was embedded): `embed sync` removes them.
   A cutover gate: SQL in embed/gates.py, shared with the before_all guard and `embed gate`. */
AUDIT (
  name embed_no_orphans,
  blocking true
);

SELECT g.*
FROM (@embed_gate('no_orphans', @source_name, @space_fp)) AS g
WHERE
  @enabled AND NOT g.passed
