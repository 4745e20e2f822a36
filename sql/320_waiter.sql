-- Deadline precision from a minute schedule: the run pg_cron starts waits for deadlines until just
-- past the next tick, and one such waiter per database serves both jobs on one connection.
--
-- Who waits: each run computes the tick it covers up to (the next minute) and takes the session
-- advisory lock (424201, that tick's minute number): a run whose tick is taken already (the other
-- job's tick, or pg_cron's queued run of the same job) returns at once. Then it takes the waiter lock
-- (424201, 0); while the previous tick's waiter holds it, the new run waits, and the old waiter, once
-- past its own tick, sees the new run's lock and hands over within one sleep slice. A waiter nobody
-- relieves stops two seconds past its tick, and pg_cron starts the run it queued meanwhile.
-- Advisory locks are open to every role that may connect: one held by any other role than the
-- installer's (the jobs' owner) is not a waiter, and the run then makes one pass as if it waited not
-- at all. Squatting the locks costs the shop its precision, never its automation.
-- The run log reads as before: the pass at the tick is a run of each job, finished at once; the
-- waiting after it is another, recorded only once it has orders to process.

create or replace function order_automation.run_waits(as_of timestamptz) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
set lock_timeout = '5s'
as $$
begin
  -- A run with an as_of is one pass; so is any run but pg_cron's, which reads no setting here (a
  -- lock on the settings then holds up only the run that needs them). pg_cron names its connections
  -- pg_cron (fallback_application_name); with background workers (cron.use_background_workers) the
  -- backend type is pg_cron.
  if run_waits.as_of is not null
     or (current_setting('application_name') <> 'pg_cron'
         and (select a.backend_type from pg_stat_get_activity(pg_backend_pid()) a) is distinct from 'pg_cron') then
    return false;
  end if;
  return (select s.precision < interval '1 minute' from order_automation.settings s);
end $$;
comment on function order_automation.run_waits(timestamptz) is
  'True for the run of a job that pg_cron started (as_of NULL) while precision is under a minute: it then waits for deadlines until just past the next tick';

create or replace function order_automation.waiter_plan(out tick integer, out tick_at timestamptz, out until timestamptz)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  timeout interval := current_setting('statement_timeout')::interval;
begin
  -- Minute ticks are the same instants in every time zone pg_cron may use.
  tick := floor(extract(epoch from clock_timestamp()) / 60)::integer + 1;
  tick_at := to_timestamp(tick::bigint * 60);
  -- Two seconds past the tick: long enough that pg_cron has seen the run still going at its tick,
  -- and queued the next one, whose start then follows this run's end at once.
  until := tick_at + interval '2 seconds';
  -- The CALL is one statement, whatever it commits: a statement_timeout would cancel it. End before.
  if timeout > interval '0' then
    until := least(until, statement_timestamp() + timeout - interval '2 seconds');
  end if;
end $$;
comment on function order_automation.waiter_plan() is
  'For a waiting run starting now: the next minute tick (its minute number and time) and when the run stops, just past it (or before a statement_timeout)';

create or replace function order_automation.start_runs(jobs text[], batch_size integer) returns bigint[]
language sql
set search_path = pg_catalog, pg_temp
set lock_timeout = '5s'
as $$
  with started as (
    insert into order_automation.run (job, as_of, batch_size)
    select j.job, now(), start_runs.batch_size from unnest(start_runs.jobs) with ordinality j(job, n) order by j.n
    returning id, job)
  select array_agg(s.id order by array_position(start_runs.jobs, s.job)) from started s
$$;
comment on function order_automation.start_runs(text[], integer) is
  'Records the start of a run of a waiting run: one run row per job it serves; returns their ids, in the order of jobs';

create or replace function order_automation.finish_runs(run_ids bigint[], error text, job text) returns bigint
language sql
set search_path = pg_catalog, pg_temp
set lock_timeout = '5s'
as $$
  with finished as (
    update order_automation.run r set finished_at = clock_timestamp(), error = finish_runs.error
     where r.id = any (finish_runs.run_ids)
    returning r.job, r.processed)
  select coalesce(sum(f.processed) filter (where f.job = finish_runs.job), 0)::bigint from finished f
$$;
comment on function order_automation.finish_runs(bigint[], text, text) is
  'Records the end of a run of a waiting run (and its error, if any) in its rows; returns how many orders it processed for job';

create or replace function order_automation.waiter_lock_ours(key integer) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select exists (
    select from pg_locks l join pg_stat_activity a on a.pid = l.pid
     where l.locktype = 'advisory' and l.granted and l.objsubid = 2
       and l.database = (select d.oid from pg_database d where d.datname = current_database())
       and l.classid = 424201::oid and l.objid::bigint = waiter_lock_ours.key
       and a.usesysid = (select r.oid from pg_roles r where r.rolname = current_user))
$$;
comment on function order_automation.waiter_lock_ours(integer) is
  'True when the waiter''s advisory lock (424201, key) is held by a session of the current role (a run of the installer''s jobs), not by some other role';

create or replace function order_automation.successor_waiting(tick integer) returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  return exists (
    select from pg_locks l
     where l.locktype = 'advisory' and l.granted and l.objsubid = 2
       and l.database = (select d.oid from pg_database d where d.datname = current_database())
       and l.classid = 424201::oid and l.objid::bigint > successor_waiting.tick);
end $$;
comment on function order_automation.successor_waiting(integer) is
  'True when the run of a later tick than tick is waiting to take over as this database''s waiter';

create or replace procedure order_automation.run_due_orders_until_tick(job text, batch_size integer, inout processed bigint)
language plpgsql
as $$
declare
  tick integer;
  tick_at pg_catalog.timestamptz;
  until pg_catalog.timestamptz;
  jobs pg_catalog.text[];
  run_ids bigint[];
  pass_at pg_catalog.timestamptz;
  pass_batch_size integer;
  wake pg_catalog.timestamptz;
  due boolean;
  serving pg_catalog.text[];
  pass_precision interval;
  unpaid smallint;
  shipped smallint;
  cancelled smallint;
  purge_after interval;
  recheck_at pg_catalog.timestamptz := '-infinity'::pg_catalog.timestamptz;
  first_pay pg_catalog.timestamptz;
  first_receipt pg_catalog.timestamptz;
  first_purge pg_catalog.timestamptz;
  handed_over boolean := false;
  tick_run_done boolean := false;
  err_job pg_catalog.text;
  err_state pg_catalog.text;
  err_message pg_catalog.text;
  remind_state pg_catalog.text;
  remind_message pg_catalog.text;
  plan_mode pg_catalog.text := pg_catalog.current_setting('plan_cache_mode');
begin
  processed := 0;
  if run_due_orders_until_tick.batch_size operator(pg_catalog.<) 1
     or run_due_orders_until_tick.batch_size operator(pg_catalog.>) 1000000 then
    raise exception using errcode = 'OA006',
      message = pg_catalog.format('batch_size must be between 1 and 1000000, not %s', run_due_orders_until_tick.batch_size);
  end if;
  select p.tick, p.tick_at, p.until into tick, tick_at, until from order_automation.waiter_plan() p;
  -- This tick is covered already: by the other job's run, or by this job's, queued by pg_cron.
  -- Held by another role, it covers nothing: processed NULL tells the caller to make one pass.
  if not pg_catalog.pg_try_advisory_lock(424201, tick) then
    if not order_automation.waiter_lock_ours(tick) then
      processed := null;
    end if;
    return;
  end if;
  -- Take over from the previous tick's waiter, which ends once it sees this run's lock. A lock that
  -- is not a waiter's, or a waiter that does not end, leaves this run one pass.
  while not pg_catalog.pg_try_advisory_lock(424201, 0) loop
    commit;
    if pg_catalog.clock_timestamp() operator(pg_catalog.>=) until or not order_automation.waiter_lock_ours(0) then
      perform pg_catalog.pg_advisory_unlock(424201, tick);
      processed := null;
      return;
    end if;
    perform pg_catalog.pg_sleep(0.05);
  end loop;
  perform pg_catalog.set_config('plan_cache_mode', 'force_custom_plan', false);
  commit;

  -- First, at the tick, a pass recorded as a run of each job, as a one-pass run records it (the run
  -- log and the status read as they always did: a run per tick). The waiting that follows records a
  -- run of each job only once it has orders to process; it ends when the waiter stops, or when the
  -- jobs to serve change (one paused or resumed), and a new one starts when there is work again.
  -- The first pass finds which jobs to serve (its probes of no job read nothing).
  jobs := '{}'::pg_catalog.text[];
  run_ids := '{}'::bigint[];
  <<serving>>
  loop
    <<passes>>
    loop
      exit passes when err_state is not null;
      pass_at := pg_catalog.clock_timestamp();
      -- The settings and the jobs to serve, every few seconds: a pass that reads only the order
      -- table costs a third as much, and waiting costs what its passes cost. Active jobs only:
      -- pausing one stops its waiting too. Purging at once (purge_cancelled_after = 0) follows the
      -- cancellations, as a one-pass run purges after cancelling.
      if pass_at operator(pg_catalog.>=) recheck_at then
        select s.precision, s.purge_cancelled_after, s.state_unpaid, s.state_shipped, s.state_cancelled,
               (select coalesce(pg_catalog.array_agg(j.job order by j.job), '{}'::pg_catalog.text[])
                  from order_automation.job j
                 where j.active
                   and (j.job operator(pg_catalog.=) any ('{cancel_expired_orders,confirm_shipped_orders}'::pg_catalog.text[])
                        or (j.job operator(pg_catalog.=) 'purge_cancelled_orders'
                            and s.purge_cancelled_after operator(pg_catalog.=) interval '0'
                            and exists (select from order_automation.job c
                                         where c.job operator(pg_catalog.=) 'cancel_expired_orders' and c.active))))
          into pass_precision, purge_after, unpaid, shipped, cancelled, serving
          from order_automation.settings s;
        recheck_at := pass_at operator(pg_catalog.+) interval '5 seconds';
        -- A job paused or resumed: the runs end, and new ones start for the jobs to serve now.
        exit passes when serving operator(pg_catalog.<>) jobs or pg_catalog.cardinality(serving) operator(pg_catalog.=) 0;
      end if;
      -- The earliest open deadline of each job served: an index probe of its partial index, which
      -- leaves out the orders marked failed in that state however many there are (those an app's
      -- trigger would not let be marked are kept out by a probe of failing_order: offset 0 makes it
      -- one primary-key probe per order read). Each probe is ordered by its deadline and takes the
      -- first row, so the plan kept for the session walks the index whatever it expects to find (an
      -- EXISTS, expecting many orders due, would scan the whole table to find none). The state codes
      -- are variables: plan_cache_mode (set below for the session) plans each probe with their
      -- values, so that it matches the partial index built for those codes. Failing orders are
      -- retried by the tick's run only (the next waiting run's), never at each pass.
      select (select o.pay_deadline from public.new_order o
               where 'cancel_expired_orders' operator(pg_catalog.=) any (jobs)
                 and o.state operator(pg_catalog.=) unpaid and o.held_at is null
                 and (o.failed_state is null or o.failed_state operator(pg_catalog.<>) unpaid)
                 and not exists (select from order_automation.failing_order f
                                  where f.job operator(pg_catalog.=) 'cancel_expired_orders'
                                    and f.order_id operator(pg_catalog.=) o.order_id offset 0)
               order by o.pay_deadline limit 1),
             (select o.receipt_deadline from public.new_order o
               where 'confirm_shipped_orders' operator(pg_catalog.=) any (jobs)
                 and o.state operator(pg_catalog.=) shipped and o.held_at is null
                 and (o.failed_state is null or o.failed_state operator(pg_catalog.<>) shipped)
                 and not exists (select from order_automation.failing_order f
                                  where f.job operator(pg_catalog.=) 'confirm_shipped_orders'
                                    and f.order_id operator(pg_catalog.=) o.order_id offset 0)
               order by o.receipt_deadline limit 1),
             (select o.cancelled_at operator(pg_catalog.+) purge_after from public.new_order o
               where 'purge_cancelled_orders' operator(pg_catalog.=) any (jobs)
                 and o.state operator(pg_catalog.=) cancelled
                 and not exists (select from order_automation.failing_order f
                                  where f.job operator(pg_catalog.=) 'purge_cancelled_orders'
                                    and f.order_id operator(pg_catalog.=) o.order_id offset 0)
               order by o.cancelled_at limit 1)
        into first_pay, first_receipt, first_purge;
      due := coalesce(least(first_pay, first_receipt, first_purge) operator(pg_catalog.<=) pass_at, false);
      -- The next pass: at the next deadline; at least once per precision, for deadlines moved or
      -- orders placed meanwhile; and a tenth of the precision after this one at the soonest, so that
      -- a stream of deadlines (or orders due that another transaction holds) is taken in batches.
      wake := least(greatest(least(first_pay, first_receipt, pass_at operator(pg_catalog.+) pass_precision),
                             pass_at operator(pg_catalog.+) (pass_precision operator(pg_catalog./) 10)),
                    until);
      if due then
        pass_batch_size := coalesce(run_due_orders_until_tick.batch_size, (select s.batch_size from order_automation.settings s));
        if pg_catalog.cardinality(run_ids) operator(pg_catalog.=) 0 then
          run_ids := order_automation.start_runs(jobs, pass_batch_size);
          commit;
        end if;
        call order_automation.run_due_orders_in_batches(jobs, run_ids, pass_at, pass_batch_size, until, false,
                                               err_job, err_state, err_message);
        exit passes when err_state is not null;
      end if;
      exit passes when pg_catalog.clock_timestamp() operator(pg_catalog.>=) until;
      -- Sleep in slices, each its own transaction.
      loop
        commit;
        exit when pg_catalog.clock_timestamp() operator(pg_catalog.>=) wake;
        if pg_catalog.clock_timestamp() operator(pg_catalog.>=) tick_at and order_automation.successor_waiting(tick) then
          handed_over := true;
          exit passes;
        end if;
        -- pg_sleep holds a snapshot, hence the backend's xmin, for as long as it sleeps: slices of at
        -- most half a second keep VACUUM's horizon moving. (Inline, not a function with a SET
        -- clause: on this path every statement counts, as the cost of waiting.)
        begin
          perform pg_catalog.pg_sleep(least(extract(epoch from wake operator(pg_catalog.-) pg_catalog.clock_timestamp()),
                                            0.5)::double precision);
        exception when query_canceled then
          get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
          exit passes;
        end;
      end loop;
    end loop;

    perform pg_catalog.set_config('lock_timeout', '5s', true);
    -- An error while no run was open (a cancel request while waiting, say) is recorded all the same.
    if err_state is not null and pg_catalog.cardinality(run_ids) operator(pg_catalog.=) 0
       and pg_catalog.cardinality(jobs) operator(pg_catalog.>) 0 then
      run_ids := order_automation.start_runs(
        jobs, coalesce(run_due_orders_until_tick.batch_size, (select s.batch_size from order_automation.settings s)));
    end if;
    processed := processed operator(pg_catalog.+) order_automation.finish_runs(
      run_ids,
      case when err_state is not null then pg_catalog.format('%s (SQLSTATE %s)', err_message, err_state) end,
      run_due_orders_until_tick.job);
    commit;
    run_ids := '{}'::bigint[];
    exit serving when err_state is not null or handed_over
                   or pg_catalog.clock_timestamp() operator(pg_catalog.>=) until
                   or pg_catalog.cardinality(serving) operator(pg_catalog.=) 0;
    jobs := serving;
    if not tick_run_done then
      -- The tick's run: reminders, everything due now, then the failing orders' retries; finished at once.
      tick_run_done := true;
      pass_batch_size := coalesce(run_due_orders_until_tick.batch_size, (select s.batch_size from order_automation.settings s));
      run_ids := order_automation.start_runs(jobs, pass_batch_size);
      commit;
      -- Reminders are a side step, as in a one-pass run: remind_due_soon records its own failures
      -- and never raises but for a cancel; a failure to call it at all is recorded and the run goes on.
      for i in 1 .. pg_catalog.cardinality(jobs) loop
        perform pg_catalog.set_config('lock_timeout', '5s', true);
        begin
          perform order_automation.remind_due_soon(jobs[i], pg_catalog.now(), run_ids[i], pass_batch_size);
        exception
          when query_canceled then
            get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
          when others then
            get stacked diagnostics remind_state = returned_sqlstate, remind_message = message_text;
            insert into order_automation.order_failure (run_id, order_id, sqlstate, message, step)
            values (run_ids[i], null, remind_state, remind_message, 'remind_due_soon');
        end;
        commit;
        exit when err_state is not null;
      end loop;
      if err_state is null then
        call order_automation.run_due_orders_in_batches(jobs, run_ids, pg_catalog.now(), pass_batch_size, until, true,
                                               err_job, err_state, err_message);
      end if;
      perform pg_catalog.set_config('lock_timeout', '5s', true);
      processed := processed operator(pg_catalog.+) order_automation.finish_runs(
        run_ids,
        case when err_state is not null then pg_catalog.format('%s (SQLSTATE %s)', err_message, err_state) end,
        run_due_orders_until_tick.job);
      commit;
      run_ids := '{}'::bigint[];
      exit serving when err_state is not null;
    end if;
  end loop;

  perform pg_catalog.set_config('plan_cache_mode', plan_mode, false);
  perform pg_catalog.pg_advisory_unlock(424201, 0);
  perform pg_catalog.pg_advisory_unlock(424201, tick);
  if err_state is not null then
    raise exception using errcode = err_state, message = err_message;
  end if;
end $$;
comment on procedure order_automation.run_due_orders_until_tick(text, integer, bigint) is
  'pg_cron''s run of cancel_expired_orders or confirm_shipped_orders: this database''s one waiter processes the due orders of every active job at their deadlines (at least once per precision) until just past the next tick; returns how many it processed for job, or NULL when another role holds the waiter''s locks (the caller then makes one pass)';
