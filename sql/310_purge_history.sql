-- Bounded history: the package's run log, and pg_cron's run details of the package's jobs, are kept
-- history_retention long. order_event, the order history, is never purged here.

create or replace procedure order_automation.purge_history(inout purged bigint default null)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  keep interval := (select s.history_retention from order_automation.settings s);
  details bigint := 0;
begin
  delete from order_automation.run r where r.started_at < now() - keep and r.finished_at is not null;
  get diagnostics purged = row_count;
  -- pg_cron's log of our jobs, when pg_cron lives in this database (it never purges it itself).
  if order_automation.cron_schema() is not null then
    execute format('delete from %1$s.job_run_details d using %1$s.job j
                     where j.jobid = d.jobid and j.jobname = any ($1) and d.end_time < now() - $2', order_automation.cron_schema())
      using (select array_agg(order_automation.cron_jobname(j.job)) from order_automation.job j), keep;
    get diagnostics details = row_count;
  end if;
  purged := purged + details;
  insert into order_automation.run (job, as_of, batch_size, finished_at, processed)
  values ('purge_history', now(), 0, clock_timestamp(), purged);
end $$;
comment on procedure order_automation.purge_history(bigint) is
  'Deletes runs (with their failures) and pg_cron run details of the package''s jobs older than history_retention; returns how many rows';
