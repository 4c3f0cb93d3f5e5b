-- How far the index build of a `building` run has got, for the run's progress line: vectors the engine has
-- inserted of how many (engines that report it: hnsw). Documented in docs/sql.md.
alter table apfa.runs
  add column build_done  bigint,
  add column build_total bigint;
