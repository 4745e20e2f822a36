-- The pg_cron schedule of the automation (jobs listed in order_automation.job): the installer that
-- (re)creates them idempotently. pg_cron is reached through EXECUTE: it may live in another database.

create or replace function order_automation.cron_jobname(job text) returns text
language sql stable
set search_path = pg_catalog, pg_temp
as $$ select format('order_automation.%s@%s', cron_jobname.job, current_database()) $$;
comment on function order_automation.cron_jobname(text) is
  'The pg_cron job name of a job in this database: one name per database, so two databases of a cluster never overwrite each other''s jobs';

create or replace function order_automation.pg_cron_problem() returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  cron_db text := current_setting('cron.database_name', true);
begin
  if not exists (select from pg_available_extensions where name = 'pg_cron') then
    return format('pg_cron is not installed on this PostgreSQL server. Install it (Debian/Ubuntu: apt-get install postgresql-%s-cron), '
                  'add pg_cron to shared_preload_libraries in postgresql.conf, and restart the server.',
                  current_setting('server_version_num')::integer / 10000);
  end if;
  if cron_db is null or not ('pg_cron' = any (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))) then
    return 'pg_cron is installed but not loaded: add pg_cron to shared_preload_libraries in postgresql.conf '
           '(shared_preload_libraries = ''pg_cron''), restart the server, and check with SHOW shared_preload_libraries.';
  end if;
  if cron_db <> current_database() then
    return format('pg_cron runs in database %I (cron.database_name), not in %I. Install with the order-automation '
                  'CLI or migrate(), which schedule the jobs from %I with cron.schedule_in_database, '
                  'or set cron.database_name = %L and restart the server.',
                  cron_db, current_database(), cron_db, current_database());
  end if;
  return null;
end $$;
comment on function order_automation.pg_cron_problem() is
  'NULL when pg_cron can schedule jobs from this database; otherwise what is wrong and how to fix it';

create or replace function order_automation.cron_schema() returns text
language sql stable
set search_path = pg_catalog, pg_temp
-- pg_cron always keeps its objects in schema cron, whatever schema the extension is created in.
as $$ select 'cron'::text where exists (select from pg_extension where extname = 'pg_cron') $$;
comment on function order_automation.cron_schema() is
  'cron when the pg_cron extension is created in this database, NULL otherwise';

create or replace function order_automation.schedule_jobs() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  problem text := order_automation.pg_cron_problem();
  j record;
begin
  if problem is not null then
    raise exception using errcode = 'OA010', message = problem,
      hint = 'To install without a schedule, migrate with --no-schedule (ORDER_AUTOMATION_SCHEDULE=off) and call the procedures yourself.';
  end if;
  if not exists (select from pg_extension where extname = 'pg_cron') then
    create extension pg_cron;
  end if;
  for j in select * from order_automation.job order by job loop
    -- cron.schedule upserts by job name: running this again changes nothing.
    execute format('select %1$s.alter_job(%1$s.schedule($1, $2, $3), active => $4)', order_automation.cron_schema())
      using order_automation.cron_jobname(j.job), j.schedule, j.command, j.active;
  end loop;
  update order_automation.job set cron_database = current_database();
end $$;
comment on function order_automation.schedule_jobs() is
  'Creates or updates the pg_cron jobs of both procedures in this database (which must be cron.database_name); OA010 when pg_cron cannot';

create or replace function order_automation.install_schedule() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- Set by the installer: 'off' = no schedule (asked for explicitly), 'external' = the installer
  -- schedules from the pg_cron database itself; anything else = schedule here.
  case coalesce(current_setting('order_automation.schedule', true), '')
    when 'off' then raise notice 'order_automation: installed without a pg_cron schedule, as asked';
    when 'external' then null;
    else perform order_automation.schedule_jobs();
  end case;
end $$;
comment on function order_automation.install_schedule() is
  'Called by the migrations: schedules the jobs unless the session setting order_automation.schedule is off or external';

create or replace function order_automation.set_schedule(job text, schedule text default null, active boolean default null)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  j order_automation.job;
begin
  update order_automation.job x
     set schedule = coalesce(set_schedule.schedule, x.schedule), active = coalesce(set_schedule.active, x.active)
   where x.job = set_schedule.job
  returning x.* into j;
  if not found then
    raise exception using errcode = 'OA006',
      message = format('unknown job %L: the jobs are %s', set_schedule.job,
                       (select string_agg(x.job, ', ' order by x.job) from order_automation.job x));
  end if;
  -- pg_cron in this database: change it now (it refuses an invalid schedule, and so nothing changes).
  -- Jobs scheduled from another database are changed there by the TypeScript module.
  if j.cron_database = current_database() then
    execute format('select %1$s.alter_job(%1$s.schedule($1, $2, $3), active => $4)', order_automation.cron_schema())
      using order_automation.cron_jobname(j.job), j.schedule, j.command, j.active;
  end if;
end $$;
comment on function order_automation.set_schedule(text, text, boolean) is
  'Changes the cron schedule of a job (e.g. ''*/5 * * * *'') and/or pauses (active false) or resumes it; pg_cron refuses an invalid schedule';

create or replace function order_automation.unschedule_jobs() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  j record;
begin
  for j in select * from order_automation.job where cron_database = current_database() loop
    -- cron.unschedule raises for a missing job: remove only what is there.
    if order_automation.cron_schema() is not null then
      execute format('select %1$s.unschedule(jobid) from %1$s.job where jobname = $1', order_automation.cron_schema())
        using order_automation.cron_jobname(j.job);
    end if;
  end loop;
  update order_automation.job set cron_database = null where cron_database = current_database();
end $$;
comment on function order_automation.unschedule_jobs() is
  'Removes the pg_cron jobs of this database that schedule_jobs created';
