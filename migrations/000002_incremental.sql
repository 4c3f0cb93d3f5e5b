-- Incremental runs: what a run reused, embedded and removed against the version it was built from, and the
-- embedder each batch actually ran (so building an index never has to load the model to learn its id).
-- Every column is documented in docs/sql.md.
alter table apfa.runs
  add column full_run        boolean not null default false,
  add column base_version    text,
  add column base_reason     text,
  add column embedder_key    text,
  add column docs_reused     bigint not null default 0,
  add column docs_changed    bigint not null default 0,
  add column docs_removed    bigint not null default 0,
  add column reuse_key       text,
  add column source_cursor   text,
  add column source_read     text;

alter table apfa.batches
  add column model_id        text,
  add column dims            int,
  add column max_chars       int;
