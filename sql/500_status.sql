-- What getStatus and the CLI show: per job, its last run, what is due now, what is held, the next
-- deadline, and what pg_cron holds for it when pg_cron lives here (from elsewhere the caller asks).

create or replace function order_automation.pg_cron_jobs()
returns table (job text, jobid bigint, schedule text, active boolean, command text)
language plpgsql stable
-- As the installing role: the admin role reads the state of the installer's jobs without any right
-- on schema cron, and only of those jobs (the installer's, named for this database's jobs).
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if order_automation.cron_schema() is null then
    return;
  end if;
  for job, jobid, schedule, active, command in execute format(
    'select x.job, c.jobid, c.schedule, c.active, c.command
       from order_automation.job x join %1$s.job c on c.jobname = order_automation.cron_jobname(x.job)
      where c.username = current_user', order_automation.cron_schema())
  loop
    return next;
  end loop;
end $$;
comment on function order_automation.pg_cron_jobs() is
  'The pg_cron jobs of the package in this database, as pg_cron holds them (none when pg_cron lives in another database)';

create or replace function order_automation.job_status(at timestamptz default now())
returns table (
  job text, schedule text, active boolean, cron_database text, cron_jobname text,
  last_run_id bigint, last_started_at timestamptz, last_finished_at timestamptz,
  last_processed bigint, last_failed bigint, last_error text,
  due_now bigint, held bigint, next_deadline timestamptz,
  cron_state text, cron_schedule text, worst_lateness interval,
  failing bigint, failing_since timestamptz
)
language plpgsql stable
set search_path = pg_catalog, pg_temp
-- Planned with the state codes' values, so that each count probes its partial index (which leaves
-- out the orders marked failed: those are counted from failing_order).
set plan_cache_mode = force_custom_plan
as $$
declare
  s order_automation.settings := (select x from order_automation.settings x);
begin
  return query
  select j.job, j.schedule, j.active, j.cron_database, order_automation.cron_jobname(j.job),
         r.id, r.started_at, r.finished_at, r.processed, r.failed, r.error,
         case j.job
           when 'cancel_expired_orders' then
             (select count(*) from public.new_order o
               where o.state = s.state_unpaid and o.held_at is null
                 and (o.failed_state is null or o.failed_state <> s.state_unpaid)
                 and o.pay_deadline <= job_status.at
                 and not exists (select from order_automation.failing_order f
                                  where f.job = j.job and f.order_id = o.order_id offset 0))
           when 'confirm_shipped_orders' then
             (select count(*) from public.new_order o
               where o.state = s.state_shipped and o.held_at is null
                 and (o.failed_state is null or o.failed_state <> s.state_shipped)
                 and o.receipt_deadline <= job_status.at
                 and not exists (select from order_automation.failing_order f
                                  where f.job = j.job and f.order_id = o.order_id offset 0))
           when 'purge_cancelled_orders' then
             (select count(*) from public.new_order o
               where o.state = s.state_cancelled and o.cancelled_at <= job_status.at - s.purge_cancelled_after
                 and not exists (select from order_automation.failing_order f
                                  where f.job = j.job and f.order_id = o.order_id offset 0))
         end,
         case j.job
           when 'cancel_expired_orders' then
             (select count(*) from public.new_order o where o.state = s.state_unpaid and o.held_at is not null)
           when 'confirm_shipped_orders' then
             (select count(*) from public.new_order o where o.state = s.state_shipped and o.held_at is not null)
         end,
         case j.job
           when 'cancel_expired_orders' then
             (select min(o.pay_deadline) from public.new_order o
               where o.state = s.state_unpaid and o.held_at is null
                 and (o.failed_state is null or o.failed_state <> s.state_unpaid)
                 and o.pay_deadline > job_status.at)
           when 'confirm_shipped_orders' then
             (select min(o.receipt_deadline) from public.new_order o
               where o.state = s.state_shipped and o.held_at is null
                 and (o.failed_state is null or o.failed_state <> s.state_shipped)
                 and o.receipt_deadline > job_status.at)
         end,
         -- NULL: pg_cron lives in another database, where the caller reads it.
         case when j.cron_database is null then 'not scheduled'
              when here.pg_cron is null then null
              when c.jobid is null then 'missing'
              when c.active then 'active'
              else 'paused' end,
         c.schedule,
         -- An hour of runs at the default schedule, read backwards through run_job_started. Orders
         -- processed ahead of their deadline (a run with an as_of ahead of now) count as on time.
         (select case when max(x.max_lateness) < interval '0' then interval '0' else max(x.max_lateness) end
            from (select r.max_lateness from order_automation.run r where r.job = j.job order by r.id desc limit 60) x),
         -- The orders the job is failing to process, still in the state it moves orders from (the rows
         -- of those that left it go when the retries reach them).
         case when j.job in ('cancel_expired_orders', 'confirm_shipped_orders', 'purge_cancelled_orders')
              then f.failing end,
         f.failing_since
    from order_automation.job j
    cross join (select order_automation.cron_schema() as pg_cron) here
    left join order_automation.pg_cron_jobs() c on c.job = j.job
    left join lateral (select * from order_automation.run r where r.job = j.job order by r.id desc limit 1) r on true
    -- One primary-key probe per failing order (offset 0), never a scan of new_order.
    left join lateral (select count(*) as failing, min(x.first_failed_at) as failing_since
                         from order_automation.failing_order x
                        where x.job = j.job
                          and exists (select from public.new_order o
                                       where o.order_id = x.order_id
                                         and o.state = case j.job when 'cancel_expired_orders' then s.state_unpaid
                                                                  when 'confirm_shipped_orders' then s.state_shipped
                                                                  else s.state_cancelled end
                                       offset 0)) f on true
   order by j.job;
end $$;
comment on function order_automation.job_status(timestamptz) is
  'Per job: schedule, active, last run (start, end, orders processed, failures, error), orders due at `at` (failing ones aside), orders held, the next deadline after it, its state in pg_cron (active, paused, missing, not scheduled; NULL when pg_cron lives in another database), the worst lateness of its last 60 runs, and the orders it is failing to process (order_automation.failing_order: how many, the first failure)';
