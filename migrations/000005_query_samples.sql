-- Embeddings of real search/advice queries, sampled by the server (runtime/query-samples.ts), so a build can
-- measure its index's recall on queries as users ask them, not only on the corpus's own rows. Only the vector
-- is kept, never the query text (docs/security.md). `model_key` is the embedder's identity
-- (runtime/stages/identity.ts): a build uses only vectors of the model it indexes. Each flush keeps the newest
-- `server.query_samples.keep` rows per model_key and deletes the rest.
create table apfa.query_samples (
  id bigserial primary key,
  at timestamptz not null default now(),
  model_key text not null,
  dims int not null,
  -- dims × float32, little-endian
  vector bytea not null
);

create index query_samples_model on apfa.query_samples (model_key, id desc);
