/* What consumers read: `embed.<source>_active` serves exactly one space per source: the one
   embed_store.serving says production reads, handed to SQLMesh as `embed_serving`. Switching it
   (`embed cutover` / `embed rollback`) is a `sqlmesh plan` that re-creates only this view,
   behind the blocking gate audits below (embed/gates.py; the same gates run as config.yaml's
   before_all guard on every plan, so re-promotion is gated too). */
MODEL (
  name embed.@{source}_active,
  kind VIEW,
  blueprints @embed_active_blueprints(),
  audits (
    embed_single_space(expected_fp := @fp),
    embed_vector_dims(expected_dims := @dims),
    embed_smoke(source_name := @source, space_fp := @fp, enabled := NOT @is_legacy),
    embed_coverage(source_name := @source, space_fp := @fp, enabled := NOT @is_legacy),
    embed_shadow_fresh(source_name := @source, space_fp := @fp, enabled := NOT @is_legacy),
    embed_shadow_ndcg(source_name := @source, space_fp := @fp, enabled := NOT @is_legacy),
    embed_shadow_ann_recall(source_name := @source, space_fp := @fp, enabled := NOT @is_legacy),
    embed_backup(source_name := @source, space_fp := @fp, enabled := NOT @is_legacy),
    embed_no_orphans(source_name := @source, space_fp := @fp, enabled := NOT @is_legacy),
    embed_verify(source_name := @source, space_fp := @fp, enabled := NOT @is_legacy)
  )
);

SELECT
  *
FROM embed.@{source}__@{space}
