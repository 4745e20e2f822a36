-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0003_precision.ts. Never edit.

-- >>> 300_due_orders.sql
-- The two automations: cancel unpaid orders past pay_deadline, confirm shipped orders past
-- receipt_deadline. Batches of batch_size, a COMMIT after each, skipping rows others are changing.

create or replace function order_automation.due_orders(job text, as_of timestamptz, batch_size integer, skip_ids text[])
returns text[]
language plpgsql
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
as $$
declare
  ids text[];
begin
  -- Locks up to batch_size due orders, oldest deadline first, skipping rows others are changing.
  -- One static query per job, each matching its partial index.
  case due_orders.job
    when 'cancel_expired_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = 0 and o.held_at is null and o.pay_deadline <= due_orders.as_of
                 and o.order_id <> all (due_orders.skip_ids)
               order by o.pay_deadline
               limit due_orders.batch_size
                 for no key update skip locked) d;
    when 'confirm_shipped_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = 2 and o.held_at is null and o.receipt_deadline <= due_orders.as_of
                 and o.order_id <> all (due_orders.skip_ids)
               order by o.receipt_deadline
               limit due_orders.batch_size
                 for no key update skip locked) d;
    when 'purge_cancelled_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = 4
                 and o.cancelled_at <= due_orders.as_of - (select s.purge_cancelled_after from order_automation.settings s)
                 and o.order_id <> all (due_orders.skip_ids)
               order by o.cancelled_at
               limit due_orders.batch_size
                 for update skip locked) d;
  end case;
  return coalesce(ids, '{}'::text[]);
end $$;
comment on function order_automation.due_orders(text, timestamptz, integer, text[]) is
  'Locks and returns up to batch_size orders a job must process at as_of (held orders never are), skipping skip_ids and rows locked by others';

create or replace function order_automation.process_orders(
  job text, ids text[], out processed bigint, out max_lateness interval
)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- Set-based: the lifecycle triggers book the whole set in one pass. The same statement measures
  -- how late after its deadline each order was processed.
  case process_orders.job
    when 'cancel_expired_orders' then
      perform set_config('order_automation.cause', 'payment_timeout', true);
      with done as (
        update public.new_order o set state = 4, cancelled_at = now() where o.order_id = any (process_orders.ids)
        returning o.cancelled_at - o.pay_deadline as lateness)
      select count(*), max(done.lateness) into processed, max_lateness from done;
    when 'confirm_shipped_orders' then
      perform set_config('order_automation.cause', 'receipt_timeout', true);
      with done as (
        update public.new_order o set state = 3, received_at = now() where o.order_id = any (process_orders.ids)
        returning o.received_at - o.receipt_deadline as lateness)
      select count(*), max(done.lateness) into processed, max_lateness from done;
    when 'purge_cancelled_orders' then
      perform set_config('order_automation.cause', 'purge_cancelled_orders', true);
      delete from public.new_order_detail d where d.order_id = any (process_orders.ids);
      delete from public.new_order o where o.order_id = any (process_orders.ids);
      get diagnostics processed = row_count;
  end case;
  perform set_config('order_automation.cause', '', true);
end $$;
comment on function order_automation.process_orders(text, text[]) is
  'Applies a job to orders due_orders() locked: cancel, confirm, or delete; returns how many, and the latest after its deadline that one was processed';

create or replace function order_automation.process_due_batch(
  job text, as_of timestamptz, batch_size integer, run_id bigint, skip_ids text[],
  out processed bigint, out failed text[], out max_lateness interval
)
language plpgsql
set search_path = pg_catalog, pg_temp
-- A stuck lock ends the batch (and the run) instead of hanging the schedule; the run records why
-- and the next run retries. (No statement_timeout here: PostgreSQL arms it per top-level statement.)
set lock_timeout = '5s'
as $$
declare
  ids text[] := order_automation.due_orders(process_due_batch.job, process_due_batch.as_of,
                                            process_due_batch.batch_size, process_due_batch.skip_ids);
  one text;
  one_processed bigint;
  one_lateness interval;
  err_state text;
  err_message text;
begin
  processed := 0;
  failed := '{}'::text[];
  if cardinality(ids) = 0 then
    return;
  end if;
  begin
    select p.processed, p.max_lateness into processed, max_lateness
      from order_automation.process_orders(process_due_batch.job, ids) p;
    return;
  exception
    when lock_not_available or deadlock_detected then raise;
    when others then null;  -- some order of the batch is bad: find it below
  end;

  -- One order broke the batch (an app's own trigger raising for it, say): take the batch again
  -- order by order, so only the bad ones are skipped and recorded, and every other one is processed.
  -- Order by order, each order's bookkeeping would lock its shelves or its seller's balance in the
  -- batch's order, not in the sorted order every set-based writer (another runner's batch) uses:
  -- the two would deadlock. So first lock, sorted, every row the batch's bookkeeping can touch; the
  -- locks are kept until the batch commits, whatever order the orders then come in.
  if process_due_batch.job = 'confirm_shipped_orders' then
    perform 1 from public."user" u
     where u.user_id in (select us.user_id from public.new_order o join public.user_store us on us.store_id = o.store_id
                          where o.order_id = any (ids))
     order by u.user_id
       for no key update;
  elsif process_due_batch.job = 'cancel_expired_orders' then
    perform 1 from public.store s
     where (s.store_id, s.book_id) in (select o.store_id, d.book_id from public.new_order o
                                         join public.new_order_detail d on d.order_id = o.order_id
                                        where o.order_id = any (ids))
     order by s.store_id, s.book_id
       for no key update of s;
  end if;
  foreach one in array ids loop
    begin
      select p.processed, p.max_lateness into one_processed, one_lateness
        from order_automation.process_orders(process_due_batch.job, array[one]) p;
      processed := processed + one_processed;
      max_lateness := greatest(max_lateness, one_lateness);
    exception
      when lock_not_available or deadlock_detected then raise;
      when others then
        get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
        insert into order_automation.order_failure (run_id, order_id, sqlstate, message)
        values (process_due_batch.run_id, one, err_state, err_message);
        failed := failed || one;
    end;
  end loop;
end $$;
comment on function order_automation.process_due_batch(text, timestamptz, integer, bigint, text[]) is
  'One batch of a run: processes up to batch_size due orders not in skip_ids; returns how many, the orders that failed (recorded in order_failure), and the latest after its deadline that one was processed';

create or replace function order_automation.remind_due_soon(job text, as_of timestamptz) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
set lock_timeout = '5s'
as $$
declare
  ahead interval := (select s.remind_before from order_automation.settings s);
  reminded bigint := 0;
begin
  if ahead is null or remind_due_soon.job not in ('cancel_expired_orders', 'confirm_shipped_orders') then
    return 0;
  end if;
  -- reminded_state marks the order in the same statement: a concurrent run re-checks it on the
  -- locked row and writes no second reminder.
  if remind_due_soon.job = 'cancel_expired_orders' then
    with soon as (
      update public.new_order o set reminded_state = 0
       where o.state = 0 and o.held_at is null
         and o.pay_deadline > remind_due_soon.as_of and o.pay_deadline <= remind_due_soon.as_of + ahead
         and o.reminded_state is distinct from 0
      returning o.order_id, o.pay_deadline as deadline)
    insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
    select soon.order_id, 0, 0, 'payment_due_soon', format('pay deadline %s', soon.deadline) from soon;
  else
    with soon as (
      update public.new_order o set reminded_state = 2
       where o.state = 2 and o.held_at is null
         and o.receipt_deadline > remind_due_soon.as_of and o.receipt_deadline <= remind_due_soon.as_of + ahead
         and o.reminded_state is distinct from 2
      returning o.order_id, o.receipt_deadline as deadline)
    insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
    select soon.order_id, 2, 2, 'receipt_due_soon', format('receipt deadline %s', soon.deadline) from soon;
  end if;
  get diagnostics reminded = row_count;
  if reminded > 0 then
    perform pg_notify('order_automation', 'order_event');
  end if;
  return reminded;
end $$;
comment on function order_automation.remind_due_soon(text, timestamptz) is
  'Writes, once per order, a payment_due_soon / receipt_due_soon event for orders whose deadline is within remind_before of as_of (not held, not yet due)';

-- The drivers commit after every batch, and a procedure with a SET clause cannot COMMIT: so they
-- have none. Everything in them is therefore written so that the caller's search_path cannot reach
-- it: functions and operators schema-qualified (OPERATOR(pg_catalog.x); BETWEEN and IN expand to
-- unqualified operators, so they are not used), types either SQL keywords (bigint, integer,
-- interval, boolean) or qualified (pg_catalog.text, pg_catalog.timestamptz), no record variable.
-- They cannot SET lock_timeout either: they set it at the start of each of their transactions, so a
-- lock held forever on one of the package's tables ends the run instead of hanging the schedule.
create or replace procedure order_automation.run_due_orders_in_batches(
  jobs text[], run_ids bigint[], as_of timestamptz, batch_size integer, stop_at timestamptz,
  inout skip_ids text[], inout error_job text, inout error_state text, inout error_message text
)
language plpgsql
as $$
declare
  draining boolean[] := pg_catalog.array_fill(true, array[pg_catalog.cardinality(run_due_orders_in_batches.jobs)]);
  batch_processed bigint;
  batch_failed pg_catalog.text[];
  batch_lateness interval;
begin
  -- One batch of each job in turn, so that a backlog of one job never holds the other's deadlines
  -- back; a commit after each batch.
  <<rounds>>
  while true operator(pg_catalog.=) any (draining) loop
    for i in 1 .. pg_catalog.cardinality(run_due_orders_in_batches.jobs) loop
      continue when not draining[i];
      perform pg_catalog.set_config('lock_timeout', '5s', true);
      begin
        select b.processed, b.failed, b.max_lateness into batch_processed, batch_failed, batch_lateness
          from order_automation.process_due_batch(
                 run_due_orders_in_batches.jobs[i], run_due_orders_in_batches.as_of, run_due_orders_in_batches.batch_size,
                 run_due_orders_in_batches.run_ids[i], run_due_orders_in_batches.skip_ids) b;
      -- query_canceled too (a cancel request, a caller's statement_timeout): the run records it, then re-raises.
      exception when others or query_canceled then
        get stacked diagnostics error_state = returned_sqlstate, error_message = message_text;
        error_job := run_due_orders_in_batches.jobs[i];
        return;
      end;
      -- Nothing done, nothing written: a pass that finds nothing due costs no WAL.
      if batch_processed operator(pg_catalog.>) 0 or pg_catalog.cardinality(batch_failed) operator(pg_catalog.>) 0 then
        skip_ids := skip_ids operator(pg_catalog.||) batch_failed;
        update order_automation.run r
           set processed = r.processed operator(pg_catalog.+) batch_processed,
               failed = r.failed operator(pg_catalog.+) pg_catalog.cardinality(batch_failed),
               max_lateness = greatest(r.max_lateness, batch_lateness)
         where r.id operator(pg_catalog.=) run_due_orders_in_batches.run_ids[i];
      end if;
      commit;
      -- A short batch means nothing else is due (or it is locked by another run, which will do it).
      draining[i] := batch_processed operator(pg_catalog.+) pg_catalog.cardinality(batch_failed)
                     operator(pg_catalog.>=) run_due_orders_in_batches.batch_size;
      exit rounds when pg_catalog.clock_timestamp() operator(pg_catalog.>=) run_due_orders_in_batches.stop_at;
    end loop;
  end loop;
end $$;
comment on procedure order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, text[], text, text, text) is
  'The batch loop of a run: batches of each job in turn (counted in its run row) until every job is drained at as_of or stop_at is reached; stops at the first error, returned in error_*';

create or replace procedure order_automation.run_due_orders(
  job text, as_of timestamptz, batch_size integer, inout processed bigint
)
language plpgsql
as $$
declare
  run_id bigint;
  run_as_of pg_catalog.timestamptz := coalesce(run_due_orders.as_of, pg_catalog.now());
  run_batch_size integer;
  budget interval;
  started pg_catalog.timestamptz := pg_catalog.clock_timestamp();
  skip_ids pg_catalog.text[] := '{}'::pg_catalog.text[];
  err_job pg_catalog.text;
  err_state pg_catalog.text;
  err_message pg_catalog.text;
begin
  perform pg_catalog.set_config('lock_timeout', '5s', true);
  if run_due_orders.job is null
     or not run_due_orders.job operator(pg_catalog.=) any
            ('{cancel_expired_orders,confirm_shipped_orders,purge_cancelled_orders}'::pg_catalog.text[]) then
    raise exception using errcode = 'OA006', message = pg_catalog.format('unknown job %L', run_due_orders.job);
  end if;
  if run_due_orders.batch_size operator(pg_catalog.<) 1 or run_due_orders.batch_size operator(pg_catalog.>) 1000000 then
    raise exception using errcode = 'OA006',
      message = pg_catalog.format('batch_size must be between 1 and 1000000, not %s', run_due_orders.batch_size);
  end if;
  select coalesce(run_due_orders.batch_size, s.batch_size), s.max_run_time
    into run_batch_size, budget
    from order_automation.settings s;

  insert into order_automation.run (job, as_of, batch_size)
  values (run_due_orders.job, run_as_of, run_batch_size)
  returning id into run_id;
  commit;

  perform pg_catalog.set_config('lock_timeout', '5s', true);
  begin
    perform order_automation.remind_due_soon(run_due_orders.job, run_as_of);
  exception when others or query_canceled then
    get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
  end;
  commit;
  if err_state is null then
    call order_automation.run_due_orders_in_batches(array[run_due_orders.job], array[run_id], run_as_of, run_batch_size,
                                           started operator(pg_catalog.+) budget,
                                           skip_ids, err_job, err_state, err_message);
  end if;

  perform pg_catalog.set_config('lock_timeout', '5s', true);
  update order_automation.run r
     set finished_at = pg_catalog.clock_timestamp(),
         error = case when err_state is not null then pg_catalog.format('%s (SQLSTATE %s)', err_message, err_state) end
   where r.id operator(pg_catalog.=) run_id
  returning r.processed into processed;
  commit;
  if err_state is not null then
    raise exception using errcode = err_state, message = err_message;
  end if;
end $$;
comment on procedure order_automation.run_due_orders(text, timestamptz, integer, bigint) is
  'Runs one job until nothing is due or max_run_time is spent, committing after each batch; records the run in order_automation.run';

create or replace procedure order_automation.cancel_expired_orders(
  as_of timestamptz default null, batch_size integer default null, inout cancelled bigint default null
)
language plpgsql
as $$
declare
  purged bigint;
begin
  -- pg_cron's run waits for deadlines until just past its next tick; any other is one pass.
  if order_automation.run_waits(cancel_expired_orders.as_of) then
    call order_automation.run_due_orders_until_tick('cancel_expired_orders', cancel_expired_orders.batch_size, cancelled);
    return;
  end if;
  call order_automation.run_due_orders('cancel_expired_orders', cancel_expired_orders.as_of,
                                       cancel_expired_orders.batch_size, cancelled);
  perform pg_catalog.set_config('lock_timeout', '5s', true);
  -- purge_cancelled_after = 0 is the reference behaviour: cancelled orders are deleted at once.
  if (select s.purge_cancelled_after from order_automation.settings s) operator(pg_catalog.=) interval '0' then
    call order_automation.purge_cancelled_orders(cancel_expired_orders.as_of, cancel_expired_orders.batch_size, purged);
  end if;
end $$;
comment on procedure order_automation.cancel_expired_orders(timestamptz, integer, bigint) is
  'Cancels every unpaid order with pay_deadline <= as_of (default now): books back on the shelf. Returns cancelled. Call it outside a transaction block: it commits after each batch. Run by pg_cron, it waits for deadlines until just past its next tick (setting precision)';

create or replace procedure order_automation.confirm_shipped_orders(
  as_of timestamptz default null, batch_size integer default null, inout confirmed bigint default null
)
language plpgsql
as $$
begin
  -- pg_cron's run waits for deadlines until just past its next tick; any other is one pass.
  if order_automation.run_waits(confirm_shipped_orders.as_of) then
    call order_automation.run_due_orders_until_tick('confirm_shipped_orders', confirm_shipped_orders.batch_size, confirmed);
    return;
  end if;
  call order_automation.run_due_orders('confirm_shipped_orders', confirm_shipped_orders.as_of,
                                       confirm_shipped_orders.batch_size, confirmed);
end $$;
comment on procedure order_automation.confirm_shipped_orders(timestamptz, integer, bigint) is
  'Marks received every shipped order with receipt_deadline <= as_of (default now): sellers are paid. Returns confirmed. Call it outside a transaction block: it commits after each batch. Run by pg_cron, it waits for deadlines until just past its next tick (setting precision)';

create or replace procedure order_automation.purge_cancelled_orders(
  as_of timestamptz default null, batch_size integer default null, inout purged bigint default null
)
language plpgsql
as $$
begin
  perform pg_catalog.set_config('lock_timeout', '5s', true);
  if (select s.purge_cancelled_after from order_automation.settings s) is null then
    purged := 0;  -- NULL: keep cancelled orders
    return;
  end if;
  call order_automation.run_due_orders('purge_cancelled_orders', purge_cancelled_orders.as_of,
                                       purge_cancelled_orders.batch_size, purged);
end $$;
comment on procedure order_automation.purge_cancelled_orders(timestamptz, integer, bigint) is
  'Deletes, in batches, cancelled orders (and their lines) cancelled purge_cancelled_after or longer before as_of; order_event keeps their history. Returns purged';

-- >>> 320_waiter.sql
-- Deadline precision from a minute schedule: the run pg_cron starts waits for deadlines until just
-- past the next tick, and one such waiter per database serves both jobs on one connection.
--
-- Who waits: each run computes the tick it covers up to (the next minute) and takes the session
-- advisory lock (424201, that tick's minute number): a run whose tick is taken already (the other
-- job's tick, or pg_cron's queued run of the same job) returns at once. Then it takes the waiter lock
-- (424201, 0); while the previous tick's waiter holds it, the new run waits, and the old waiter, once
-- past its own tick, sees the new run's lock and hands over within one sleep slice. A waiter nobody
-- relieves stops two seconds past its tick, and pg_cron starts the run it queued meanwhile.
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
  one pg_catalog.text;
  pass_at pg_catalog.timestamptz;
  pass_batch_size integer;
  wake pg_catalog.timestamptz;
  due boolean;
  serving pg_catalog.text[];
  pass_precision interval;
  purge_after interval;
  recheck_at pg_catalog.timestamptz := '-infinity'::pg_catalog.timestamptz;
  first_pay pg_catalog.timestamptz;
  first_receipt pg_catalog.timestamptz;
  first_purge pg_catalog.timestamptz;
  skip_ids pg_catalog.text[] := '{}'::pg_catalog.text[];
  handed_over boolean := false;
  tick_run_done boolean := false;
  err_job pg_catalog.text;
  err_state pg_catalog.text;
  err_message pg_catalog.text;
begin
  processed := 0;
  if run_due_orders_until_tick.batch_size operator(pg_catalog.<) 1
     or run_due_orders_until_tick.batch_size operator(pg_catalog.>) 1000000 then
    raise exception using errcode = 'OA006',
      message = pg_catalog.format('batch_size must be between 1 and 1000000, not %s', run_due_orders_until_tick.batch_size);
  end if;
  select p.tick, p.tick_at, p.until into tick, tick_at, until from order_automation.waiter_plan() p;
  -- This tick is covered already: by the other job's run, or by this job's, queued by pg_cron.
  if not pg_catalog.pg_try_advisory_lock(424201, tick) then
    return;
  end if;
  -- Take over from the previous tick's waiter, which ends once it sees this run's lock.
  while not pg_catalog.pg_try_advisory_lock(424201, 0) loop
    commit;
    if pg_catalog.clock_timestamp() operator(pg_catalog.>=) until then
      perform pg_catalog.pg_advisory_unlock(424201, tick);
      return;
    end if;
    perform pg_catalog.pg_sleep(0.05);
  end loop;
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
        select s.precision, s.purge_cancelled_after,
               (select coalesce(pg_catalog.array_agg(j.job order by j.job), '{}'::pg_catalog.text[])
                  from order_automation.job j
                 where j.active
                   and (j.job operator(pg_catalog.=) any ('{cancel_expired_orders,confirm_shipped_orders}'::pg_catalog.text[])
                        or (j.job operator(pg_catalog.=) 'purge_cancelled_orders'
                            and s.purge_cancelled_after operator(pg_catalog.=) interval '0'
                            and exists (select from order_automation.job c
                                         where c.job operator(pg_catalog.=) 'cancel_expired_orders' and c.active))))
          into pass_precision, purge_after, serving
          from order_automation.settings s;
        recheck_at := pass_at operator(pg_catalog.+) interval '5 seconds';
        -- A job paused or resumed: the runs end, and new ones start for the jobs to serve now.
        exit passes when serving operator(pg_catalog.<>) jobs or pg_catalog.cardinality(serving) operator(pg_catalog.=) 0;
      end if;
      -- The earliest open deadline of each job served: an index probe of its partial index (orders
      -- that failed in this run aside). Each probe is ordered by its deadline and takes the first
      -- row, so the plan kept for the session walks the index whatever it expects to find (an
      -- EXISTS, expecting many orders due, would scan the whole table to find none).
      select (select o.pay_deadline from public.new_order o
               where 'cancel_expired_orders' operator(pg_catalog.=) any (jobs)
                 and o.state operator(pg_catalog.=) 0 and o.held_at is null
                 and o.order_id operator(pg_catalog.<>) all (skip_ids)
               order by o.pay_deadline limit 1),
             (select o.receipt_deadline from public.new_order o
               where 'confirm_shipped_orders' operator(pg_catalog.=) any (jobs)
                 and o.state operator(pg_catalog.=) 2 and o.held_at is null
                 and o.order_id operator(pg_catalog.<>) all (skip_ids)
               order by o.receipt_deadline limit 1),
             (select o.cancelled_at operator(pg_catalog.+) purge_after from public.new_order o
               where 'purge_cancelled_orders' operator(pg_catalog.=) any (jobs)
                 and o.state operator(pg_catalog.=) 4
                 and o.order_id operator(pg_catalog.<>) all (skip_ids)
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
        call order_automation.run_due_orders_in_batches(jobs, run_ids, pass_at, pass_batch_size, until,
                                               skip_ids, err_job, err_state, err_message);
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
      -- The tick's run: reminders, then everything due now, finished at once.
      tick_run_done := true;
      pass_batch_size := coalesce(run_due_orders_until_tick.batch_size, (select s.batch_size from order_automation.settings s));
      run_ids := order_automation.start_runs(jobs, pass_batch_size);
      commit;
      perform pg_catalog.set_config('lock_timeout', '5s', true);
      begin
        foreach one in array jobs loop
          perform order_automation.remind_due_soon(one, pg_catalog.now());
        end loop;
      exception when others or query_canceled then
        get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
      end;
      commit;
      if err_state is null then
        call order_automation.run_due_orders_in_batches(jobs, run_ids, pg_catalog.now(), pass_batch_size, until,
                                               skip_ids, err_job, err_state, err_message);
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

  perform pg_catalog.pg_advisory_unlock(424201, 0);
  perform pg_catalog.pg_advisory_unlock(424201, tick);
  if err_state is not null then
    raise exception using errcode = err_state, message = err_message;
  end if;
end $$;
comment on procedure order_automation.run_due_orders_until_tick(text, integer, bigint) is
  'pg_cron''s run of cancel_expired_orders or confirm_shipped_orders: this database''s one waiter processes the due orders of every active job at their deadlines (at least once per precision) until just past the next tick; returns how many it processed for job';

-- >>> 500_status.sql
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

-- >>> 600_privileges.sql
-- Least privilege: nothing of the package is executable by PUBLIC. Two roles (NOLOGIN; grant them to
-- your login roles): order_automation_app runs the lifecycle, order_automation_admin also the
-- automation, its settings and its schedule. pg_cron runs the jobs as the role that installed them.

do $$
begin
  -- Roles belong to the cluster: created once, kept by `down` (other databases may use them).
  -- An installer without CREATEROLE installs without them; it can grant the functions itself.
  if not exists (select from pg_roles where rolname = 'order_automation_app')
     and (select rolcreaterole or rolsuper from pg_roles where rolname = current_user) then
    create role order_automation_app nologin;
  end if;
  if not exists (select from pg_roles where rolname = 'order_automation_admin')
     and (select rolcreaterole or rolsuper from pg_roles where rolname = current_user) then
    create role order_automation_admin nologin;
  end if;
end $$;

revoke all on all functions in schema order_automation from public;
revoke all on all procedures in schema order_automation from public;
revoke all on schema order_automation from public;

do $$
begin
  if exists (select from pg_roles where rolname = 'order_automation_app') then
    grant usage on schema order_automation to order_automation_app;
    grant select, insert, update, delete on public.new_order, public.new_order_detail to order_automation_app;
    grant select, insert, update on public."user", public.user_store, public.store to order_automation_app;
    grant select on order_automation.order_event, order_automation.settings, order_automation.store_settings
      to order_automation_app;
    grant execute on function
      order_automation.place_order(text, text, text, jsonb), order_automation.pay_order(text),
      order_automation.ship_order(text), order_automation.confirm_receipt(text), order_automation.cancel_order(text),
      order_automation.payment_started(text, interval), order_automation.extend_receipt(text, interval),
      order_automation.hold(text, text), order_automation.release(text),
      order_automation.set_order_state(text, smallint, text), order_automation.current_cause()
      to order_automation_app;
  end if;
  if exists (select from pg_roles where rolname = 'order_automation_admin') then
    if exists (select from pg_roles where rolname = 'order_automation_app') then
      grant order_automation_app to order_automation_admin;
    end if;
    grant usage on schema order_automation to order_automation_admin;
    grant select, update on order_automation.settings to order_automation_admin;
    grant select, insert, update, delete on order_automation.store_settings to order_automation_admin;
    -- The procedures commit, so they cannot run as the owner: running them takes the rights they use.
    grant select, insert, update, delete on order_automation.run, order_automation.order_failure to order_automation_admin;
    grant select, update on order_automation.job to order_automation_admin;
    grant select on order_automation.order_event to order_automation_admin;
    grant execute on all functions in schema order_automation to order_automation_admin;
    grant execute on all procedures in schema order_automation to order_automation_admin;
  end if;
end $$;
