-- apfa.job_history rows for successes are written once per completing statement instead of once per job:
-- apfa's workers let graphile-worker batch their completions (completeJobBatchDelay 0: the jobs that finish in
-- one tick are deleted by one `delete ... using unnest($1)`), and a statement-level trigger with a transition
-- table turns that one statement into one insert of all its rows. The row-level trigger of 000003 ran its
-- plpgsql function and an insert per job. What is recorded does not change: a success is the DELETE of a
-- locked row (locked_by is not null), committed in the same transaction as graphile-worker's completion.
-- Failures stay row-level (000003): graphile-worker fails jobs one statement per job anyway, and telling a
-- failure from a lock or an unlock needs the old and the new row side by side.

create function apfa.record_job_successes() returns trigger language plpgsql as $$
begin
  insert into apfa.job_history (job_id, task, queue, run_id, worker_id, attempt, max_attempts, outcome, error, started_at, duration_ms)
  select d.id, t.identifier, q.queue, d.payload->>'run_id', d.locked_by, d.attempts, d.max_attempts, 'success', null,
         d.locked_at, greatest(0, round(extract(epoch from clock_timestamp() - d.locked_at) * 1000))::int
    from done d
    join graphile_worker._private_tasks t on t.id = d.task_id
    join apfa.task_queues q on q.task = t.identifier
   where d.locked_by is not null;
  return null;
end
$$;

drop trigger apfa_job_success on graphile_worker._private_jobs;
create trigger apfa_job_success after delete on graphile_worker._private_jobs
  referencing old table as done
  for each statement execute function apfa.record_job_successes();
