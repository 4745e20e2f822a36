-- The pg_cron schedule of the automation (jobs listed in order_automation.job): what each job runs,
-- where pg_cron lives, the installer that (re)creates the jobs, and schedule control for the admin role.

create or replace function order_automation.cron_jobname(job text) returns text
language sql stable
set search_path = pg_catalog, pg_temp
as $$ select format('order_automation.%s@%s', cron_jobname.job, current_database()) $$;
comment on function order_automation.cron_jobname(text) is
  'The pg_cron job name of a job in this database: one name per database, so two databases of a cluster never overwrite each other''s jobs';

create or replace function order_automation.job_command(job text) returns text
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  -- pg_cron runs its command as the installing role: the command is fixed here, per job, and never
  -- read from anything another role can write.
  case job_command.job
    when 'cancel_expired_orders' then return 'CALL order_automation.cancel_expired_orders()';
    when 'confirm_shipped_orders' then return 'CALL order_automation.confirm_shipped_orders()';
    when 'purge_cancelled_orders' then return 'CALL order_automation.purge_cancelled_orders()';
    when 'purge_history' then return 'CALL order_automation.purge_history()';
    else raise exception using errcode = 'OA006', message = format('unknown job %L: it has no command', job_command.job);
  end case;
end $$;
comment on function order_automation.job_command(text) is
  'The command pg_cron runs for a job of the package: a fixed CALL of its procedure; OA006 for any other name';

create or replace function order_automation.cron_schema() returns text
language sql stable
set search_path = pg_catalog, pg_temp
-- pg_cron always keeps its objects in schema cron. Only the extension's own schema counts: a schema
-- named cron that some role created where pg_cron is not installed is never called.
as $$
  select 'cron'::text
   where exists (select from pg_extension e
                   join pg_depend d on d.refclassid = 'pg_extension'::regclass and d.refobjid = e.oid
                  where e.extname = 'pg_cron' and d.deptype = 'e'
                    and d.classid = 'pg_namespace'::regclass
                    and d.objid = (select n.oid from pg_namespace n where n.nspname = 'cron'))
$$;
comment on function order_automation.cron_schema() is
  'cron when the pg_cron extension is created in this database (its schema cron), NULL otherwise';

create or replace function order_automation.cron_database() returns text
language sql stable
set search_path = pg_catalog, pg_temp
-- pg_cron can be created only in cron.database_name, so the extension here says "this database"
-- without reading the setting, which only superusers and pg_read_all_settings may read. The setting
-- is trusted only as pg_cron defines it (context postmaster): never a placeholder a session set.
as $$
  select case when order_automation.cron_schema() is not null then current_database()::text
              else (select s.setting from pg_settings s where s.name = 'cron.database_name' and s.context = 'postmaster') end
$$;
comment on function order_automation.cron_database() is
  'The database pg_cron lives in (cron.database_name); NULL when pg_cron is not loaded, or lives elsewhere and this role may not read the setting';

create or replace function order_automation.pg_cron_problem() returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  cron_db text := order_automation.cron_database();
begin
  if not exists (select from pg_available_extensions where name = 'pg_cron') then
    return format('pg_cron is not installed on this PostgreSQL server. Install it (Debian/Ubuntu: apt-get install postgresql-%s-cron), '
                  'add pg_cron to shared_preload_libraries in postgresql.conf, and restart the server.',
                  current_setting('server_version_num')::integer / 10000);
  end if;
  if cron_db is null and not pg_has_role(current_user, 'pg_read_all_settings', 'usage') then
    return format('cannot tell where pg_cron runs: the pg_cron extension is not created in database %I, and role %I may not read '
                  'cron.database_name. As a superuser: GRANT pg_read_all_settings TO %I (or CREATE EXTENSION pg_cron here, if '
                  'this database is cron.database_name).', current_database(), current_user, current_user);
  end if;
  if cron_db is null then
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
  if order_automation.cron_schema() is null then
    create extension pg_cron;
  end if;
  -- Creates the jobs missing from pg_cron and brings the others to the recorded schedule and state
  -- (a paused job stays paused). cron.schedule upserts by job name and role: running this again
  -- changes nothing, and only jobs of the role running it (the installer) are touched.
  for j in select * from order_automation.job order by job loop
    execute format('select %1$s.alter_job(%1$s.schedule($1, $2, $3), active => $4)', order_automation.cron_schema())
      using order_automation.cron_jobname(j.job), j.schedule, order_automation.job_command(j.job), j.active;
  end loop;
  update order_automation.job set cron_database = current_database() where cron_database is distinct from current_database();
end $$;
comment on function order_automation.schedule_jobs() is
  'Creates or updates the pg_cron jobs of this database (which must be cron.database_name) as the role running it, each running its fixed command; OA010 when pg_cron cannot';

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
-- As the installing role: the admin role controls the installer's own pg_cron job (cron.alter_job
-- on its jobid) without any right on schema cron, and can change nothing but its schedule and state.
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  j order_automation.job;
  cron_jobid bigint;
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
  -- Not scheduled (installed without a schedule): recorded, and scheduled so by the next migrate.
  -- pg_cron in another database: out of reach from here; the TypeScript module, run by the
  -- installing role, changes it there.
  if j.cron_database is null or order_automation.cron_schema() is null then
    return;
  end if;
  execute format('select j.jobid from %1$s.job j where j.jobname = $1 and j.username = $2', order_automation.cron_schema())
    into cron_jobid
    using order_automation.cron_jobname(j.job), current_user;
  if cron_jobid is null then
    raise exception using errcode = 'OA011',
      message = format('job %s is missing from pg_cron (no job %L of role %I in cron.job): nothing changed',
                       j.job, order_automation.cron_jobname(j.job), current_user),
      hint = format('Run order-automation migrate as %I: it re-creates the missing jobs, keeping paused ones paused.', current_user);
  end if;
  -- pg_cron refuses an invalid schedule, and so nothing changes.
  execute format('select %1$s.alter_job($1, schedule => $2, active => $3)', order_automation.cron_schema())
    using cron_jobid, j.schedule, j.active;
end $$;
comment on function order_automation.set_schedule(text, text, boolean) is
  'Changes the cron schedule of a job (e.g. ''*/5 * * * *'') and/or pauses (active false) or resumes it, on the installer''s own pg_cron job when pg_cron lives here; OA011 when that job is missing from pg_cron';

create or replace function order_automation.unschedule_jobs() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  j record;
begin
  for j in select * from order_automation.job where cron_database = current_database() loop
    -- cron.unschedule raises for a missing job: remove only what is there, and only the role's own.
    if order_automation.cron_schema() is not null then
      execute format('select %1$s.unschedule(c.jobid) from %1$s.job c where c.jobname = $1 and c.username = $2',
                     order_automation.cron_schema())
        using order_automation.cron_jobname(j.job), current_user;
    end if;
  end loop;
  update order_automation.job set cron_database = null where cron_database = current_database();
end $$;
comment on function order_automation.unschedule_jobs() is
  'Removes the pg_cron jobs of this database that schedule_jobs created (as the role running it)';
