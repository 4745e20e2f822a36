-- What getStatus and the CLI show: per job, its last run, what is due now, what is held, and the next
-- deadline. Whether pg_cron has the job active is read from pg_cron by the caller (it may live elsewhere).

create or replace function order_automation.job_status(at timestamptz default now())
returns table (
  job text, schedule text, active boolean, cron_database text, cron_jobname text,
  last_run_id bigint, last_started_at timestamptz, last_finished_at timestamptz,
  last_processed bigint, last_failed bigint, last_error text,
  due_now bigint, held bigint, next_deadline timestamptz, worst_lateness interval
)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select j.job, j.schedule, j.active, j.cron_database, order_automation.cron_jobname(j.job),
         r.id, r.started_at, r.finished_at, r.processed, r.failed, r.error,
         case j.job
           when 'cancel_expired_orders' then
             (select count(*) from public.new_order o where o.state = 0 and o.held_at is null and o.pay_deadline <= job_status.at)
           when 'confirm_shipped_orders' then
             (select count(*) from public.new_order o where o.state = 2 and o.held_at is null and o.receipt_deadline <= job_status.at)
           when 'purge_cancelled_orders' then
             (select count(*) from public.new_order o, order_automation.settings s
               where o.state = 4 and o.cancelled_at <= job_status.at - s.purge_cancelled_after)
         end,
         case j.job
           when 'cancel_expired_orders' then (select count(*) from public.new_order o where o.state = 0 and o.held_at is not null)
           when 'confirm_shipped_orders' then (select count(*) from public.new_order o where o.state = 2 and o.held_at is not null)
         end,
         case j.job
           when 'cancel_expired_orders' then
             (select min(o.pay_deadline) from public.new_order o where o.state = 0 and o.held_at is null and o.pay_deadline > job_status.at)
           when 'confirm_shipped_orders' then
             (select min(o.receipt_deadline) from public.new_order o where o.state = 2 and o.held_at is null and o.receipt_deadline > job_status.at)
         end,
         -- An hour of runs at the default schedule, read backwards through run_job_started. Orders
         -- processed ahead of their deadline (a run with an as_of ahead of now) count as on time.
         (select case when max(x.max_lateness) < interval '0' then interval '0' else max(x.max_lateness) end
            from (select r.max_lateness from order_automation.run r where r.job = j.job order by r.id desc limit 60) x)
    from order_automation.job j
    left join lateral (select * from order_automation.run r where r.job = j.job order by r.id desc limit 1) r on true
   order by j.job
$$;
comment on function order_automation.job_status(timestamptz) is
  'Per job: schedule, active, last run (start, end, orders processed, failures, error), orders due at `at`, orders held, the next deadline after it, and the worst lateness of its last 60 runs';
