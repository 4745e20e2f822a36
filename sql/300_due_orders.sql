-- The two automations: cancel unpaid orders past pay_deadline, confirm shipped orders past
-- receipt_deadline. Batches of batch_size, a COMMIT after each, skipping rows others are changing.

create or replace function order_automation.due_orders(job text, as_of timestamptz, batch_size integer, skip_ids text[])
returns text[]
language plpgsql
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
-- Planned with the state code's value, so that the query proves its partial index's predicate.
set plan_cache_mode = force_custom_plan
as $$
declare
  ids text[];
  s order_automation.settings := (select x from order_automation.settings x);
begin
  -- Locks up to batch_size due orders, oldest deadline first, skipping rows others are changing.
  -- One static query per job, each matching its partial index.
  case due_orders.job
    when 'cancel_expired_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = s.state_unpaid and o.held_at is null and o.pay_deadline <= due_orders.as_of
                 and o.order_id <> all (due_orders.skip_ids)
               order by o.pay_deadline
               limit due_orders.batch_size
                 for no key update skip locked) d;
    when 'confirm_shipped_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = s.state_shipped and o.held_at is null and o.receipt_deadline <= due_orders.as_of
                 and o.order_id <> all (due_orders.skip_ids)
               order by o.receipt_deadline
               limit due_orders.batch_size
                 for no key update skip locked) d;
    when 'purge_cancelled_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = s.state_cancelled
                 and o.cancelled_at <= due_orders.as_of - s.purge_cancelled_after
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
-- As the package's owner: only this code path may claim the jobs' causes (order_automation.job_claim).
-- Whoever may call it can therefore do no more than the job itself: each statement re-checks the
-- state the job moves orders from, and skips held orders.
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  s order_automation.settings := (select x from order_automation.settings x);
begin
  -- Set-based: the lifecycle triggers book the whole set in one pass. The same statement measures
  -- how late after its deadline each order was processed.
  case process_orders.job
    when 'cancel_expired_orders' then
      perform order_automation.claim_cause('payment_timeout');
      with done as (
        update public.new_order o set state = s.state_cancelled, cancelled_at = now()
         where o.order_id = any (process_orders.ids) and o.state = s.state_unpaid and o.held_at is null
        returning o.cancelled_at - o.pay_deadline as lateness)
      select count(*), max(done.lateness) into processed, max_lateness from done;
    when 'confirm_shipped_orders' then
      perform order_automation.claim_cause('receipt_timeout');
      with done as (
        update public.new_order o set state = s.state_received, received_at = now()
         where o.order_id = any (process_orders.ids) and o.state = s.state_shipped and o.held_at is null
        returning o.received_at - o.receipt_deadline as lateness)
      select count(*), max(done.lateness) into processed, max_lateness from done;
    when 'purge_cancelled_orders' then
      perform order_automation.claim_cause('purge_cancelled_orders');
      delete from public.new_order_detail d using public.new_order o
       where d.order_id = any (process_orders.ids) and o.order_id = any (process_orders.ids)
         and o.order_id = d.order_id and o.state = s.state_cancelled;
      delete from public.new_order o where o.order_id = any (process_orders.ids) and o.state = s.state_cancelled;
      get diagnostics processed = row_count;
  end case;
  perform order_automation.claim_cause(null);
end $$;
comment on function order_automation.process_orders(text, text[]) is
  'Applies a job to orders due_orders() locked: cancel (unpaid ones), confirm (shipped ones), or delete (cancelled ones), none of them held; returns how many, and the latest after its deadline that one was processed';

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

create or replace function order_automation.remind_due_soon(
  job text, as_of timestamptz, run_id bigint default null, max_orders integer default 500
) returns bigint
language plpgsql
-- As the package's owner: whoever may run the jobs may write their reminders, without any right on
-- the order history.
security definer
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
set lock_timeout = '5s'
set plan_cache_mode = force_custom_plan
as $$
declare
  ahead interval := (select s.remind_before from order_automation.settings s);
  horizon timestamptz;
  soon_state smallint;
  ids text[];
  one text;
  unpaid smallint := (select s.state_unpaid from order_automation.settings s);
  shipped smallint := (select s.state_shipped from order_automation.settings s);
  reminded bigint := 0;
  n bigint;
  err_state text;
  err_message text;
begin
  if ahead is null or remind_due_soon.job is null
     or remind_due_soon.job not in ('cancel_expired_orders', 'confirm_shipped_orders') then
    return 0;
  end if;
  soon_state := case remind_due_soon.job when 'cancel_expired_orders' then unpaid else shipped end;
  -- A reminder is a side step of the run: best effort. Rows others hold are skipped (reminded by a
  -- later run), a row that fails is skipped and recorded, at most max_orders are taken per run, and
  -- nothing here ever fails the run (but a cancel, which the run records).
  begin
    begin
      horizon := remind_due_soon.as_of + ahead;
    exception when datetime_field_overflow then
      horizon := 'infinity';  -- so far ahead that every future deadline is near
    end;
    if soon_state = unpaid then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = unpaid and o.held_at is null
                 and o.pay_deadline > remind_due_soon.as_of and o.pay_deadline <= horizon
                 and o.reminded_state is distinct from unpaid
               order by o.pay_deadline
               limit greatest(remind_due_soon.max_orders, 1)
                 for no key update skip locked) d;
    else
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = shipped and o.held_at is null
                 and o.receipt_deadline > remind_due_soon.as_of and o.receipt_deadline <= horizon
                 and o.reminded_state is distinct from shipped
               order by o.receipt_deadline
               limit greatest(remind_due_soon.max_orders, 1)
                 for no key update skip locked) d;
    end if;
    if ids is null then
      return 0;
    end if;
    begin
      reminded := order_automation.write_reminders(soon_state, ids);
    exception when others then
      -- One row broke the set (an app's own trigger raising for it, say): one by one, so only the
      -- bad ones are skipped and recorded.
      foreach one in array ids loop
        begin
          n := order_automation.write_reminders(soon_state, array[one]);
          reminded := reminded + n;
        exception when others then
          get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
          if remind_due_soon.run_id is not null then
            insert into order_automation.order_failure (run_id, order_id, sqlstate, message, step)
            values (remind_due_soon.run_id, one, err_state, err_message, 'remind_due_soon');
          end if;
        end;
      end loop;
    end;
  exception when others then
    get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
    if remind_due_soon.run_id is not null then
      insert into order_automation.order_failure (run_id, order_id, sqlstate, message, step)
      values (remind_due_soon.run_id, null, err_state, err_message, 'remind_due_soon');
    end if;
    return 0;
  end;
  if reminded > 0 then
    perform pg_notify('order_automation', 'order_event');
  end if;
  return reminded;
end $$;
comment on function order_automation.remind_due_soon(text, timestamptz, bigint, integer) is
  'Writes, once per order, a payment_due_soon / receipt_due_soon event for up to max_orders orders whose deadline is within remind_before of as_of (not held, not yet due); skips rows others hold, records failing ones under run_id, never raises but a cancel';

create or replace function order_automation.write_reminders(soon_state smallint, ids text[]) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  n bigint;
  unpaid smallint := (select s.state_unpaid from order_automation.settings s);
begin
  -- reminded_state marks the order in the same statement: a concurrent run re-checks it on the
  -- locked row and writes no second reminder.
  with soon as (
    update public.new_order o set reminded_state = write_reminders.soon_state
     where o.order_id = any (write_reminders.ids) and o.state = write_reminders.soon_state
       and o.reminded_state is distinct from write_reminders.soon_state
    returning o.order_id, case when write_reminders.soon_state = unpaid then o.pay_deadline else o.receipt_deadline end as deadline)
  insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
  select soon.order_id, write_reminders.soon_state, write_reminders.soon_state,
         case when write_reminders.soon_state = unpaid then 'payment_due_soon' else 'receipt_due_soon' end,
         format(case when write_reminders.soon_state = unpaid then 'pay deadline %s' else 'receipt deadline %s' end, soon.deadline)
    from soon;
  get diagnostics n = row_count;
  return n;
end $$;
comment on function order_automation.write_reminders(smallint, text[]) is
  'Marks the orders ids (locked by remind_due_soon) reminded in state soon_state and writes their due-soon events; returns how many';

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
  remind_state pg_catalog.text;
  remind_message pg_catalog.text;
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
  processed := 0;
  -- Reminders are a side step: remind_due_soon records its own failures and never raises, but a
  -- cancel (which ends the run, recorded) or a failure to call it at all (recorded, and the run goes on).
  begin
    perform order_automation.remind_due_soon(run_due_orders.job, run_as_of, run_id, run_batch_size);
  exception
    when query_canceled then
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
    when others then
      get stacked diagnostics remind_state = returned_sqlstate, remind_message = message_text;
      insert into order_automation.order_failure (run_id, order_id, sqlstate, message, step)
      values (run_id, null, remind_state, remind_message, 'remind_due_soon');
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
  -- pg_cron's run waits for deadlines until just past its next tick; any other is one pass, and so
  -- is pg_cron's when the waiter's locks are held by another role (cancelled NULL).
  if order_automation.run_waits(cancel_expired_orders.as_of) then
    call order_automation.run_due_orders_until_tick('cancel_expired_orders', cancel_expired_orders.batch_size, cancelled);
    if cancelled is not null then
      return;
    end if;
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
  -- pg_cron's run waits for deadlines until just past its next tick; any other is one pass, and so
  -- is pg_cron's when the waiter's locks are held by another role (confirmed NULL).
  if order_automation.run_waits(confirm_shipped_orders.as_of) then
    call order_automation.run_due_orders_until_tick('confirm_shipped_orders', confirm_shipped_orders.batch_size, confirmed);
    if confirmed is not null then
      return;
    end if;
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
