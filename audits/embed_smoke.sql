/* The space's newest smoke evidence passed, from an allowed endpoint class (embed smoke).
   A cutover gate: SQL in embed/gates.py, shared with the before_all guard and `embed gate`. */
AUDIT (
  name embed_smoke,
  blocking true
);

SELECT g.*
FROM (@embed_gate('smoke', @source_name, @space_fp)) AS g
WHERE
  @enabled AND NOT g.passed
