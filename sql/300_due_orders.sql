-- The two automations: cancel unpaid orders past pay_deadline, confirm shipped orders past
-- receipt_deadline. Batches of batch_size, a COMMIT after each, skipping rows others are changing.
--
-- Orders a job fails to process (an app's trigger refusing them, a book renamed in the store) must
-- not starve the others: each is recorded once in failing_order and leaves the due scans; runs
-- retry them only after every order never tried, least recently tried first, and stop at the first
-- batch of retries that fails again. Thousands of failing orders cost a run one batch of retries,
-- and a waiting run's probes nothing.

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
  -- Locks up to batch_size due orders, oldest deadline first, skipping rows others are changing and
  -- orders the job is failing to process (retry_failing_batch retries those). One static query per
  -- job, each matching its partial index, which leaves out the orders marked failed in that state;
  -- the probe of failing_order keeps out those an app's trigger would not let be marked (offset 0:
  -- one primary-key probe per order read, never a scan of failing_order).
  case due_orders.job
    when 'cancel_expired_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = s.state_unpaid and o.held_at is null
                 and (o.failed_state is null or o.failed_state <> s.state_unpaid)
                 and o.pay_deadline <= due_orders.as_of
                 and o.order_id <> all (due_orders.skip_ids)
                 and not exists (select from order_automation.failing_order f
                                  where f.job = due_orders.job and f.order_id = o.order_id offset 0)
               order by o.pay_deadline
               limit due_orders.batch_size
                 for no key update skip locked) d;
    when 'confirm_shipped_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = s.state_shipped and o.held_at is null
                 and (o.failed_state is null or o.failed_state <> s.state_shipped)
                 and o.receipt_deadline <= due_orders.as_of
                 and o.order_id <> all (due_orders.skip_ids)
                 and not exists (select from order_automation.failing_order f
                                  where f.job = due_orders.job and f.order_id = o.order_id offset 0)
               order by o.receipt_deadline
               limit due_orders.batch_size
                 for no key update skip locked) d;
    when 'purge_cancelled_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = s.state_cancelled
                 and o.cancelled_at <= due_orders.as_of - s.purge_cancelled_after
                 and o.order_id <> all (due_orders.skip_ids)
                 and not exists (select from order_automation.failing_order f
                                  where f.job = due_orders.job and f.order_id = o.order_id offset 0)
               order by o.cancelled_at
               limit due_orders.batch_size
                 for update skip locked) d;
  end case;
  return coalesce(ids, '{}'::text[]);
end $$;
comment on function order_automation.due_orders(text, timestamptz, integer, text[]) is
  'Locks and returns up to batch_size orders a job must process at as_of (held orders never are), skipping skip_ids, the orders the job is failing to process (failing_order) and rows locked by others';

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


create or replace function order_automation.process_batch(
  job text, ids text[], run_id bigint, retrying boolean,
  out processed bigint, out failed text[], out max_lateness interval
)
language plpgsql
-- As the package's owner: only its routines write failing_order, so that no row of it is deleted
-- while its order is marked failed (that order would be left out of the due scans and retried never).
-- Whoever may call it can do no more than the job: process_orders re-checks every order's state.
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  s order_automation.settings := (select x from order_automation.settings x);
  job_state smallint := case process_batch.job when 'cancel_expired_orders' then s.state_unpaid
                                                when 'confirm_shipped_orders' then s.state_shipped
                                                else s.state_cancelled end;
  one_by_one boolean := false;
  one text;
  one_processed bigint;
  one_lateness interval;
  err_state text;
  err_message text;
  err_states text[] := '{}'::text[];
  err_messages text[] := '{}'::text[];
  logged bigint;
begin
  processed := 0;
  failed := '{}'::text[];
  if coalesce(cardinality(process_batch.ids), 0) = 0 then
    return;
  end if;
  begin
    select p.processed, p.max_lateness into processed, max_lateness
      from order_automation.process_orders(process_batch.job, process_batch.ids) p;
  exception
    when lock_not_available or deadlock_detected then raise;
    when others then one_by_one := true;  -- some order of the batch is bad: find it below
  end;

  -- One order broke the batch (an app's own trigger raising for it, say): take the batch again
  -- order by order, so only the bad ones are skipped and recorded, and every other one is processed.
  -- Order by order, each order's bookkeeping would lock its shelves or its seller's balance in the
  -- batch's order, not in the sorted order every set-based writer (another runner's batch) uses:
  -- the two would deadlock. So first lock, sorted, every row the batch's bookkeeping can touch; the
  -- locks are kept until the batch commits, whatever order the orders then come in.
  if one_by_one then
    if process_batch.job = 'confirm_shipped_orders' then
      perform 1 from public."user" u
       where u.user_id in (select us.user_id from public.new_order o join public.user_store us on us.store_id = o.store_id
                            where o.order_id = any (process_batch.ids))
       order by u.user_id
         for no key update;
    elsif process_batch.job = 'cancel_expired_orders' then
      perform 1 from public.store st
       where (st.store_id, st.book_id) in (select o.store_id, d.book_id from public.new_order o
                                             join public.new_order_detail d on d.order_id = o.order_id
                                            where o.order_id = any (process_batch.ids))
       order by st.store_id, st.book_id
         for no key update of st;
    end if;
    foreach one in array process_batch.ids loop
      begin
        select p.processed, p.max_lateness into one_processed, one_lateness
          from order_automation.process_orders(process_batch.job, array[one]) p;
        processed := processed + one_processed;
        max_lateness := greatest(max_lateness, one_lateness);
      exception
        when lock_not_available or deadlock_detected then raise;
        when others then
          get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
          failed := failed || one;
          err_states := err_states || err_state;
          err_messages := err_messages || err_message;
      end;
    end loop;
  end if;

  -- Retried orders processed at last (no longer in the job's state) are failing no more.
  if process_batch.retrying then
    delete from order_automation.failing_order f
     where f.job = process_batch.job and f.order_id = any (process_batch.ids) and not f.order_id = any (failed)
       and not exists (select from public.new_order o where o.order_id = f.order_id and o.state = job_state);
  end if;
  if cardinality(failed) = 0 then
    return;
  end if;

  -- The run's log keeps the first 100 failures it meets, so that a run meeting thousands of failing
  -- orders writes a bounded log (run.failed counts them all); failing_order keeps each failing order
  -- once, with how many times it failed and its last error.
  select count(*) into logged
    from (select from order_automation.order_failure f
           where f.run_id = process_batch.run_id and f.step is null limit 100) x;
  insert into order_automation.order_failure (run_id, order_id, sqlstate, message)
  select process_batch.run_id, u.order_id, u.sqlstate, u.message
    from unnest(failed, err_states, err_messages) with ordinality u(order_id, sqlstate, message, n)
   order by u.n
   limit greatest(100 - logged, 0);
  insert into order_automation.failing_order as f (job, order_id, sqlstate, message, last_run_id)
  select process_batch.job, u.order_id, u.sqlstate, u.message, process_batch.run_id
    from unnest(failed, err_states, err_messages) u(order_id, sqlstate, message)
  on conflict on constraint failing_order_pkey do update
    set failures = f.failures + 1, last_failed_at = excluded.last_failed_at, tried_at = excluded.tried_at,
        sqlstate = excluded.sqlstate, message = excluded.message, last_run_id = excluded.last_run_id;

  -- Marked failed in their state, the orders leave its due index: however many fail, the due scans
  -- and the waiter's probes never walk them again. An app's trigger may refuse even this update:
  -- such an order stays in the index, and its failing_order row keeps it out of the due scans.
  -- (Cancelled orders are not marked: the purge's index holds them all, and its failures are rare.)
  if process_batch.job <> 'purge_cancelled_orders' then
    begin
      update public.new_order o set failed_state = job_state
       where o.order_id = any (failed) and o.state = job_state and o.failed_state is distinct from job_state;
    exception
      when lock_not_available or deadlock_detected then raise;
      when others then
        foreach one in array failed loop
          begin
            update public.new_order o set failed_state = job_state
             where o.order_id = one and o.state = job_state and o.failed_state is distinct from job_state;
          exception
            when lock_not_available or deadlock_detected then raise;
            when others then null;  -- left in the index, kept out of the due scans by failing_order
          end;
        end loop;
    end;
  end if;
end $$;
comment on function order_automation.process_batch(text, text[], bigint, boolean) is
  'Processes orders a run locked (set-based, else order by order); records those that fail in failing_order (and the run''s first 100 in order_failure) and marks them failed in their state; retrying: deletes the failing_order rows of those processed. Returns how many were processed, the failed ones, and the latest after its deadline one was';

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
begin
  select b.processed, b.failed, b.max_lateness into processed, failed, max_lateness
    from order_automation.process_batch(
           process_due_batch.job,
           order_automation.due_orders(process_due_batch.job, process_due_batch.as_of, process_due_batch.batch_size,
                                       process_due_batch.skip_ids),
           process_due_batch.run_id, false) b;
end $$;
comment on function order_automation.process_due_batch(text, timestamptz, integer, bigint, text[]) is
  'One batch of a run: processes up to batch_size due orders not in skip_ids and not failing (failing_order); returns how many, the orders that failed (recorded in failing_order), and the latest after its deadline that one was processed';

create or replace function order_automation.retry_failing_batch(
  job text, as_of timestamptz, batch_size integer, run_id bigint,
  out processed bigint, out failed text[], out max_lateness interval
)
language plpgsql
-- As the package's owner, as process_batch: only the package's routines write failing_order.
security definer
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
set lock_timeout = '5s'
set plan_cache_mode = force_custom_plan
as $$
declare
  s order_automation.settings := (select x from order_automation.settings x);
  from_state smallint := case retry_failing_batch.job when 'cancel_expired_orders' then s.state_unpaid
                                                       when 'confirm_shipped_orders' then s.state_shipped
                                                       else s.state_cancelled end;
  ids text[];
begin
  -- An order that left the job's state (paid, cancelled or deleted by the shop) is failing no more.
  -- Never tried again, its row comes to the front of the line: the front is tidied at each batch
  -- (twice a batch of rows, one primary-key probe each). Rows another run holds are skipped, never
  -- waited for.
  delete from order_automation.failing_order f
   where f.job = retry_failing_batch.job
     and f.order_id in (select g.order_id from order_automation.failing_order g
                         where g.job = retry_failing_batch.job
                           and g.order_id = any (array(select h.order_id from order_automation.failing_order h
                                                        where h.job = retry_failing_batch.job
                                                        order by h.tried_at
                                                        limit 2 * retry_failing_batch.batch_size))
                           and not exists (select from public.new_order o
                                            where o.order_id = g.order_id and o.state = from_state offset 0)
                           for update skip locked);
  -- The failing orders of the job tried least recently (not by this run) and due, locked as
  -- due_orders locks them (rows others are changing skipped): the failing_order rows in the order
  -- of their last try, each order by its primary key. Those held or not yet due are passed over.
  case retry_failing_batch.job
    when 'cancel_expired_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from order_automation.failing_order f
                join public.new_order o on o.order_id = f.order_id
               where f.job = retry_failing_batch.job and f.last_run_id is distinct from retry_failing_batch.run_id
                 and o.state = s.state_unpaid and o.held_at is null and o.pay_deadline <= retry_failing_batch.as_of
               order by f.tried_at
               limit retry_failing_batch.batch_size
                 for no key update of o skip locked) d;
    when 'confirm_shipped_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from order_automation.failing_order f
                join public.new_order o on o.order_id = f.order_id
               where f.job = retry_failing_batch.job and f.last_run_id is distinct from retry_failing_batch.run_id
                 and o.state = s.state_shipped and o.held_at is null and o.receipt_deadline <= retry_failing_batch.as_of
               order by f.tried_at
               limit retry_failing_batch.batch_size
                 for no key update of o skip locked) d;
    when 'purge_cancelled_orders' then
      select array_agg(d.order_id) into ids
        from (select o.order_id from order_automation.failing_order f
                join public.new_order o on o.order_id = f.order_id
               where f.job = retry_failing_batch.job and f.last_run_id is distinct from retry_failing_batch.run_id
                 and o.state = s.state_cancelled
                 and o.cancelled_at <= retry_failing_batch.as_of - s.purge_cancelled_after
               order by f.tried_at
               limit retry_failing_batch.batch_size
                 for update of o skip locked) d;
  end case;
  select b.processed, b.failed, b.max_lateness into processed, failed, max_lateness
    from order_automation.process_batch(retry_failing_batch.job, ids, retry_failing_batch.run_id, true) b;
end $$;
comment on function order_automation.retry_failing_batch(text, timestamptz, integer, bigint) is
  'One batch of retries: forgets the failing orders at the front of the line that left the job''s state; locks up to batch_size orders of failing_order the job tried least recently (not by run_id) and still due, and processes them as process_due_batch does. Returns how many were processed, those that failed again, and the latest after its deadline one was';

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
  -- Each query matches its state's due index (orders marked failed left out: they are past due).
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
               where o.state = unpaid and o.held_at is null and (o.failed_state is null or o.failed_state <> unpaid)
                 and o.pay_deadline > remind_due_soon.as_of and o.pay_deadline <= horizon
                 and o.reminded_state is distinct from unpaid
               order by o.pay_deadline
               limit greatest(remind_due_soon.max_orders, 1)
                 for no key update skip locked) d;
    else
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = shipped and o.held_at is null and (o.failed_state is null or o.failed_state <> shipped)
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
  jobs text[], run_ids bigint[], as_of timestamptz, batch_size integer, stop_at timestamptz, retry boolean,
  inout error_job text, inout error_state text, inout error_message text
)
language plpgsql
as $$
declare
  draining boolean[] := pg_catalog.array_fill(true, array[pg_catalog.cardinality(run_due_orders_in_batches.jobs)]);
  batch_processed bigint;
  batch_failed pg_catalog.text[];
  batch_lateness interval;
  retry_size integer;
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
                 run_due_orders_in_batches.run_ids[i], '{}'::pg_catalog.text[]) b;
      -- query_canceled too (a cancel request, a caller's statement_timeout): the run records it, then re-raises.
      exception when others or query_canceled then
        get stacked diagnostics error_state = returned_sqlstate, error_message = message_text;
        error_job := run_due_orders_in_batches.jobs[i];
        return;
      end;
      -- Nothing done, nothing written: a pass that finds nothing due costs no WAL.
      if batch_processed operator(pg_catalog.>) 0 or pg_catalog.cardinality(batch_failed) operator(pg_catalog.>) 0 then
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

  -- Then, when asked (once a run: not at each pass of a waiting run) and while time is left, the
  -- orders that failed before, after every order never tried: batches of them, job by job, until a
  -- batch fails again. However many are failing, a run spends at most one failing batch a job on
  -- them (of 100 orders at most: a fraction of a second, which a waiting run's deadlines can spare),
  -- and the next run takes the next ones; orders fixed meanwhile are all processed.
  if not run_due_orders_in_batches.retry then
    return;
  end if;
  retry_size := least(run_due_orders_in_batches.batch_size, 100);
  for i in 1 .. pg_catalog.cardinality(run_due_orders_in_batches.jobs) loop
    loop
      exit when pg_catalog.clock_timestamp() operator(pg_catalog.>=) run_due_orders_in_batches.stop_at;
      perform pg_catalog.set_config('lock_timeout', '5s', true);
      begin
        select b.processed, b.failed, b.max_lateness into batch_processed, batch_failed, batch_lateness
          from order_automation.retry_failing_batch(
                 run_due_orders_in_batches.jobs[i], run_due_orders_in_batches.as_of, retry_size,
                 run_due_orders_in_batches.run_ids[i]) b;
      exception when others or query_canceled then
        get stacked diagnostics error_state = returned_sqlstate, error_message = message_text;
        error_job := run_due_orders_in_batches.jobs[i];
        return;
      end;
      if batch_processed operator(pg_catalog.>) 0 or pg_catalog.cardinality(batch_failed) operator(pg_catalog.>) 0 then
        update order_automation.run r
           set processed = r.processed operator(pg_catalog.+) batch_processed,
               failed = r.failed operator(pg_catalog.+) pg_catalog.cardinality(batch_failed),
               max_lateness = greatest(r.max_lateness, batch_lateness)
         where r.id operator(pg_catalog.=) run_due_orders_in_batches.run_ids[i];
      end if;
      commit;
      exit when pg_catalog.cardinality(batch_failed) operator(pg_catalog.>) 0
             or batch_processed operator(pg_catalog.<) retry_size;
    end loop;
  end loop;
end $$;
comment on procedure order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, boolean, text, text, text) is
  'The batch loop of a run: batches of each job in turn (counted in its run row) until every job is drained at as_of or stop_at is reached; then, if retry, batches (of 100 at most) of each job''s failing orders until one fails again; stops at the first error, returned in error_*';


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
                                           started operator(pg_catalog.+) budget, true,
                                           err_job, err_state, err_message);
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
  'Runs one job until nothing is due or max_run_time is spent, committing after each batch, then retries its failing orders until a batch fails again; records the run in order_automation.run';

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
