-- One notification per inserting statement that names the apfa queues its jobs belong to, so that each worker
-- process listens once (channel apfa_jobs) and wakes only the runner owning the job. graphile-worker's own
-- `jobs:insert` carries no task, so every runner in a process heard it and fetched at once; their fetches lock
-- every available named queue with SKIP LOCKED, and the serial queue's owner could come up empty behind another
-- runner's fetch. The payload is a JSON object of queue → jobs ready now (run_at not in the future); tasks
-- apfa has not routed (no apfa.task_queues row) count under "", which wakes every runner. Jobs scheduled for
-- later, and run_at changed by a job_key replace, are found by the runners' poll, as graphile-worker's are.

create function apfa.notify_job_queues() returns trigger language plpgsql as $$
declare
  v_payload text;
begin
  select json_object_agg(x.queue, x.n)::text into v_payload
    from (select coalesce(q.queue, '') as queue, count(*) as n
            from new_jobs j
            join graphile_worker._private_tasks t on t.id = j.task_id
            left join apfa.task_queues q on q.task = t.identifier
           where j.run_at <= now()
           group by 1) x;
  if v_payload is not null then
    perform pg_notify('apfa_jobs', v_payload);
  end if;
  return null;
end
$$;

create trigger apfa_job_notify after insert on graphile_worker._private_jobs
  referencing new table as new_jobs
  for each statement execute function apfa.notify_job_queues();
