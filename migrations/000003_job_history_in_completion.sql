-- apfa.job_history is written by Postgres itself, in the transaction in which graphile-worker records a job
-- attempt's outcome, instead of by one INSERT per job from the worker after the fact. So:
--   * no round trip per job (graphile-worker batches its completions; the history rows ride along);
--   * a history row exists exactly when graphile-worker's outcome committed: a crash after the job ran but
--     before its completion committed leaves neither (the job is still locked, is released by the reaper or
--     the orphan check, and runs again: at-least-once execution, one row per committed outcome); a crash after
--     the commit cannot lose the row.
-- Only tasks an apfa worker registered (apfa.task_queues) are recorded.
--
-- graphile-worker's private tables, checked against graphile-worker 0.17.3 (src/sql/completeJobs.ts,
-- failJobs.ts, getJobs.ts): a job is locked by an UPDATE that sets locked_by/locked_at and attempts + 1; a
-- success DELETEs the locked row; a failure UPDATEs it to locked_by = null with last_error set and run_at
-- pushed back by at least a second. Releasing a lock without an outcome (the reaper, force_unlock_workers,
-- apfa's orphan release) leaves run_at alone, and removing an unlocked job (remove_job, permanently_fail_jobs,
-- cleanup) touches no locked row: neither is an outcome, and neither is recorded.

create function apfa.record_job_outcome() returns trigger language plpgsql as $$
declare
  j graphile_worker._private_jobs;
  outcome text;
begin
  if tg_op = 'DELETE' then
    j := old;
    outcome := 'success';
  else
    j := new;
    outcome := case when new.attempts >= new.max_attempts then 'failed' else 'retry' end;
  end if;
  insert into apfa.job_history (job_id, task, queue, run_id, worker_id, attempt, max_attempts, outcome, error, started_at, duration_ms)
  select j.id, t.identifier, q.queue, j.payload->>'run_id', old.locked_by, j.attempts, j.max_attempts, outcome,
         case when outcome = 'success' then null else left(j.last_error, 4000) end,
         old.locked_at, greatest(0, round(extract(epoch from clock_timestamp() - old.locked_at) * 1000))::int
    from graphile_worker._private_tasks t
    join apfa.task_queues q on q.task = t.identifier
   where t.id = j.task_id;
  return null;
end
$$;

create trigger apfa_job_success after delete on graphile_worker._private_jobs
  for each row when (old.locked_by is not null)
  execute function apfa.record_job_outcome();

create trigger apfa_job_failure after update on graphile_worker._private_jobs
  for each row when (old.locked_by is not null and new.locked_by is null and new.run_at > old.run_at and new.last_error is not null)
  execute function apfa.record_job_outcome();
