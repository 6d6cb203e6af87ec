/* Every vector has the space's dimension (catches an untyped `vector` column holding
   vectors of another model, or a store table whose type was altered). */
AUDIT (
  name embed_vector_dims,
  blocking true
);

SELECT source_id
FROM @this_model
WHERE @embed_dims_of(embedding) <> @expected_dims
