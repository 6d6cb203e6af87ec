/* A verified backup (embed backup) taken within the configured age before the switch.
   A cutover gate: SQL in embed/gates.py, shared with the before_all guard and `embed gate`. */
AUDIT (
  name embed_backup,
  blocking true
);

SELECT g.*
FROM (@embed_gate('backup', @source_name, @space_fp)) AS g
WHERE
  @enabled AND NOT g.passed
