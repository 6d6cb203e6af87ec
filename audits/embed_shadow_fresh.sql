/* A shadow run of the space against the legacy space started after its last backfill.
   A cutover gate: SQL in embed/gates.py, shared with the before_all guard and `embed gate`. */
AUDIT (
  name embed_shadow_fresh,
  blocking true
);

SELECT g.*
FROM (@embed_gate('shadow_fresh', @source_name, @space_fp)) AS g
WHERE
  @enabled AND NOT g.passed
