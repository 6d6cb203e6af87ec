/* Every live source row with text has a current vector in the space, or a recorded reason why not.
   A cutover gate: SQL in embed/gates.py, shared with the before_all guard and `embed gate`. */
AUDIT (
  name embed_coverage,
  blocking true
);

SELECT g.*
FROM (@embed_gate('coverage', @source_name, @space_fp)) AS g
WHERE
  @enabled AND NOT g.passed
