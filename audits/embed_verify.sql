/* The newest `embed verify` of the space for the source found no vector of another space.
   A cutover gate: SQL in embed/gates.py, shared with the before_all guard and `embed gate`. */
AUDIT (
  name embed_verify,
  blocking true
);

SELECT g.*
FROM (@embed_gate('verify', @source_name, @space_fp)) AS g
WHERE
  @enabled AND NOT g.passed
