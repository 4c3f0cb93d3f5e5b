-- apfa's own schema. Applied by `apfa migrate` in order; each file runs once, in a transaction.
-- Every column is documented in docs/sql.md.
create schema if not exists apfa;

create table apfa.runs (
  id              text primary key,
  pipeline        text not null,
  status          text not null default 'pending'
                  check (status in ('pending', 'enumerating', 'embedding', 'building', 'succeeded', 'failed', 'cancelled')),
  trigger         text not null default 'manual',
  source          text,
  embedder        text,
  model_id        text,
  batch_size      int not null,
  batches_total   int,
  batches_done    int not null default 0,
  batches_failed  int not null default 0,
  docs_read       bigint not null default 0,
  docs_embedded   bigint not null default 0,
  docs_skipped    bigint not null default 0,
  docs_truncated  bigint not null default 0,
  skipped         jsonb not null default '{}',
  skipped_samples jsonb not null default '[]',
  build_enqueued  boolean not null default false,
  index_version   text,
  error           text,
  stats           jsonb,
  created_at      timestamptz not null default now(),
  started_at      timestamptz,
  enumerated_at   timestamptz,
  embedded_at     timestamptz,
  finished_at     timestamptz,
  deadline_at     timestamptz not null
);
create index runs_pipeline_created_idx on apfa.runs (pipeline, created_at desc);
create index runs_active_idx on apfa.runs (status) where status in ('pending', 'enumerating', 'embedding', 'building');

create table apfa.batches (
  run_id          text not null references apfa.runs (id) on delete cascade,
  n               int not null,
  status          text not null default 'pending' check (status in ('pending', 'running', 'done', 'failed')),
  docs            int not null,
  embedded        int,
  truncated       int,
  skipped         int,
  attempts        int not null default 0,
  input_key       text not null,
  vectors_key     text,
  docs_key        text,
  bytes           bigint,
  duration_ms     int,
  error           text,
  created_at      timestamptz not null default now(),
  started_at      timestamptz,
  finished_at     timestamptz,
  primary key (run_id, n)
);

create table apfa.index_versions (
  version         text primary key,
  pipeline        text not null,
  run_id          text references apfa.runs (id) on delete set null,
  engine          text not null,
  metric          text not null,
  dims            int not null,
  count           bigint not null,
  model_id        text not null,
  bytes           bigint not null,
  manifest        jsonb not null,
  created_at      timestamptz not null default now(),
  published_at    timestamptz,
  deleted_at      timestamptz
);
create index index_versions_pipeline_idx on apfa.index_versions (pipeline, published_at desc);

create table apfa.workers (
  id                  text primary key,
  pipeline            text not null,
  hostname            text not null,
  pid                 int not null,
  queues              jsonb not null,
  graphile_worker_ids text[] not null default '{}',
  metrics_port        int,
  started_at          timestamptz not null default now(),
  last_heartbeat_at   timestamptz not null default now(),
  stopped_at          timestamptz,
  reaped_at           timestamptz
);

create table apfa.job_history (
  id              bigserial primary key,
  job_id          bigint,
  task            text not null,
  queue           text,
  run_id          text,
  worker_id       text,
  attempt         int not null,
  max_attempts    int not null,
  outcome         text not null check (outcome in ('success', 'retry', 'failed')),
  error           text,
  started_at      timestamptz not null,
  finished_at     timestamptz not null default now(),
  duration_ms     int not null
);
create index job_history_finished_idx on apfa.job_history (finished_at desc);
create index job_history_task_idx on apfa.job_history (task, finished_at desc);

create table apfa.index_stats (
  id              bigserial primary key,
  pipeline        text not null,
  version         text,
  engine          text,
  count           bigint,
  dims            int,
  bytes_memory    bigint,
  bytes_store     bigint,
  search_p95_ms   double precision,
  urgency         double precision,
  recommendation  text,
  reasoning       jsonb,
  computed_at     timestamptz not null default now()
);

-- Which queue each task identifier runs on, written by workers at start so SQL users can group jobs by queue.
create table apfa.task_queues (
  task            text primary key,
  queue           text not null,
  updated_at      timestamptz not null default now()
);

-- graphile-worker's own view lacks the payload; this one adds it and the apfa queue of each task.
-- `apfa migrate` runs graphile-worker's migrations first, so its tables exist here.
create view apfa.jobs as
  select j.id, t.identifier as task, coalesce(tq.queue, jq.queue_name) as queue, jq.queue_name as serial_queue,
         j.payload, j.priority, j.run_at, j.attempts, j.max_attempts, j.last_error, j.created_at, j.updated_at,
         j.key, j.locked_at, j.locked_by
    from graphile_worker._private_jobs j
    join graphile_worker._private_tasks t on t.id = j.task_id
    left join graphile_worker._private_job_queues jq on jq.id = j.job_queue_id
    left join apfa.task_queues tq on tq.task = t.identifier;
