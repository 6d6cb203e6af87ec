/* Every row is tagged with the one declared space: a row of another space fails the plan,
   even when its dimension is the same. */
AUDIT (
  name embed_single_space,
  blocking true
);

SELECT space_fp
FROM @this_model
WHERE space_fp IS DISTINCT FROM @expected_fp
