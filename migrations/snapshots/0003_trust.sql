-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0003_trust.ts. Never edit.

-- >>> 100_order_lifecycle.sql
-- The order lifecycle on new_order: a guard that refuses illegal state changes and the
-- set-based bookkeeping of each change (money, stock, history), the same for every writer.
-- Trigger names carry a number because PostgreSQL fires the triggers of one event in name order:
-- _050_ before _100_ before _900_ (guards first, bookkeeping and history last).

-- Which writer changed an order: package routines set order_automation.cause for their transaction;
-- a plain UPDATE by an app is recorded as 'sql'. Any session can set that setting, so the causes of
-- the package's own jobs are believed only with a claim in order_automation.job_claim, which only
-- the jobs' own code path (process_orders, running as the package's owner) can write.
create or replace function order_automation.current_cause() returns text
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  claimed text := coalesce(nullif(current_setting('order_automation.cause', true), ''), 'sql');
begin
  if claimed in ('payment_timeout', 'receipt_timeout', 'purge_cancelled_orders')
     and not exists (select from order_automation.job_claim c
                      where c.xid = pg_current_xact_id() and c.cause = claimed) then
    raise exception using errcode = '42501',
      message = format('the cause %s is recorded only by the package''s own jobs: this change is refused', claimed),
      hint = 'Run the job (CALL order_automation.cancel_expired_orders(), ...) or record the change under a cause of your own.';
  end if;
  return claimed;
end $$;
comment on function order_automation.current_cause() is
  'The cause recorded in order_event for changes made by the current transaction; refuses a job''s cause the job did not claim';

create or replace function order_automation.claim_cause(cause text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- Called by the jobs' own routines as the package's owner: a caller without the owner's rights
  -- cannot write the claim, and so cannot make current_cause() believe a job's cause.
  delete from order_automation.job_claim c where c.xid = pg_current_xact_id();
  if claim_cause.cause is not null then
    insert into order_automation.job_claim (xid, cause) values (pg_current_xact_id(), claim_cause.cause);
  end if;
  perform set_config('order_automation.cause', coalesce(claim_cause.cause, ''), true);
end $$;
comment on function order_automation.claim_cause(text) is
  'The package''s jobs claim their cause for the current transaction (NULL: give it back); only the package''s owner can';

create or replace function order_automation.tg_new_order__before_insert() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
as $$
begin
  if new.state <> 0 then
    raise exception using errcode = 'OA001',
      message = format('order %s must be placed unpaid (state 0), not in state %s', new.order_id, new.state);
  end if;
  if new.pay_deadline is null then
    new.pay_deadline := new.created_at + coalesce(
      (select ss.payment_timeout from order_automation.store_settings ss where ss.store_id = new.store_id),
      (select s.payment_timeout from order_automation.settings s));
  end if;
  return new;
end $$;

create or replace trigger _100_place before insert on public.new_order
for each row execute function order_automation.tg_new_order__before_insert();

create or replace function order_automation.tg_new_order__keep_identity() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  raise exception using errcode = 'OA001',
    message = format('order %s: order_id, user_id and store_id cannot change once placed', old.order_id);
end $$;

-- Stock and money are booked against the order's store and buyer: they may not move under it.
create or replace trigger _050_keep_identity before update of order_id, user_id, store_id on public.new_order
for each row when (old.order_id is distinct from new.order_id
                or old.user_id is distinct from new.user_id
                or old.store_id is distinct from new.store_id)
execute function order_automation.tg_new_order__keep_identity();

create or replace function order_automation.tg_new_order__stamp() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
as $$
begin
  case new.state
    when 1 then new.paid_at := coalesce(new.paid_at, now());
    when 2 then
      new.shipped_at := coalesce(new.shipped_at, now());
      new.receipt_deadline := coalesce(new.receipt_deadline, new.shipped_at + coalesce(
        (select ss.receipt_timeout from order_automation.store_settings ss where ss.store_id = new.store_id),
        (select s.receipt_timeout from order_automation.settings s)));
    when 3 then new.received_at := coalesce(new.received_at, now());
    when 4 then new.cancelled_at := coalesce(new.cancelled_at, now());
    else null;
  end case;
  return new;
end $$;

-- Fires only when a writer changed the state without giving the matching timestamps; the
-- automation gives them, so its set-based updates pay no per-row PL/pgSQL call.
create or replace trigger _100_stamp before update of state on public.new_order
for each row when (old.state is distinct from new.state and (
     (new.state = 1 and new.paid_at is null)
  or (new.state = 2 and (new.shipped_at is null or new.receipt_deadline is null))
  or (new.state = 3 and new.received_at is null)
  or (new.state = 4 and new.cancelled_at is null)))
execute function order_automation.tg_new_order__stamp();

create or replace function order_automation.tg_new_order__after_insert() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  -- Once per statement, not per row: a function with a SET clause is never inlined.
  event_cause text := order_automation.current_cause();
begin
  insert into order_automation.order_event (order_id, from_state, to_state, cause)
  select n.order_id, null, n.state, event_cause from new_orders n;
  perform pg_notify('order_automation', 'order_event');
  return null;
end $$;

create or replace trigger _900_placed after insert on public.new_order
referencing new table as new_orders
for each statement execute function order_automation.tg_new_order__after_insert();

create or replace function order_automation.tg_new_order__after_update() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  changed bigint;
  bad_order text; bad_from smallint; bad_to smallint;
  debit_users text[]; debit_totals bigint[];
  credit_users text[]; credit_totals bigint[];
  restock_stores text[]; restock_books text[]; restock_counts integer[]; restock_orders text[];
  short_user text;
  -- Once per statement, not per row: a function with a SET clause is never inlined.
  event_cause text := order_automation.current_cause();
begin
  -- One pass over the changed rows: count them and find an illegal change, if any.
  select count(*),
         (array_agg(o.order_id) filter (where (o.state, n.state) not in ((0, 1), (1, 2), (2, 3), (0, 4), (1, 4))))[1],
         (array_agg(o.state) filter (where (o.state, n.state) not in ((0, 1), (1, 2), (2, 3), (0, 4), (1, 4))))[1],
         (array_agg(n.state) filter (where (o.state, n.state) not in ((0, 1), (1, 2), (2, 3), (0, 4), (1, 4))))[1]
    into changed, bad_order, bad_from, bad_to
    from old_orders o join new_orders n using (order_id)
   where o.state <> n.state;
  if changed = 0 then
    return null;
  end if;
  if bad_order is not null then
    raise exception using errcode = 'OA001',
      message = format('order %s cannot change from state %s to state %s', bad_order, bad_from, bad_to),
      hint = 'Allowed: 0 unpaid -> 1 paid -> 2 shipped -> 3 received; 0 or 1 -> 4 cancelled.';
  end if;

  -- Money held by orders moves between balances; totals are summed per user in one statement.
  select array_agg(t.user_id order by t.user_id) filter (where t.kind = 'debit'),
         array_agg(t.total order by t.user_id) filter (where t.kind = 'debit'),
         array_agg(t.user_id order by t.user_id) filter (where t.kind = 'credit'),
         array_agg(t.total order by t.user_id) filter (where t.kind = 'credit')
    into debit_users, debit_totals, credit_users, credit_totals
    from (select m.kind, m.user_id, sum(m.total)::bigint as total
            from (select case when n.state = 1 then 'debit' else 'credit' end as kind,
                         case when n.state = 3 then us.user_id else n.user_id end as user_id,
                         d.count::bigint * d.price as total
                    from new_orders n
                    join old_orders o using (order_id)
                    -- One primary-key probe per changed order, whatever the statistics of the lines
                    -- say (after a purge they may say "empty": driven from them, this turns quadratic).
                    cross join lateral (select d.count, d.price from public.new_order_detail d
                                         where d.order_id = n.order_id offset 0) d
                    left join public.user_store us on n.state = 3 and us.store_id = n.store_id
                   where (o.state = 0 and n.state = 1)     -- paid: the buyer pays into the order
                      or (o.state = 1 and n.state = 4)     -- cancelled after payment: refund
                      or (o.state = 2 and n.state = 3)     -- received: the seller is paid
                 ) m
           group by m.kind, m.user_id) t
   where t.total > 0;

  if debit_users is not null or credit_users is not null then
    -- Lock balances in user_id order so concurrent writers never deadlock on them.
    perform 1 from public."user" u
     where u.user_id = any (coalesce(debit_users, '{}') || coalesce(credit_users, '{}'))
     order by u.user_id
       for no key update;
  end if;

  if debit_users is not null then
    with debit as (select * from unnest(debit_users, debit_totals) as x(user_id, total)),
         paid as (
           update public."user" u set balance = u.balance - debit.total
             from debit
            where u.user_id = debit.user_id and u.balance >= debit.total
           returning u.user_id)
    select debit.user_id into short_user
      from debit where debit.user_id not in (select paid.user_id from paid)
     limit 1;
    if short_user is not null then
      select min(n.order_id) into bad_order
        from old_orders o join new_orders n using (order_id)
       where o.state = 0 and n.state = 1 and n.user_id = short_user;
      raise exception using errcode = 'OA003',
        message = format('order %s: buyer %s has not enough balance to pay for it', bad_order, short_user);
    end if;
  end if;

  if credit_users is not null then
    update public."user" u set balance = u.balance + credit.total
      from unnest(credit_users, credit_totals) as credit(user_id, total)
     where u.user_id = credit.user_id;
  end if;

  -- Cancelled orders put their books back on the shelf, summed per store and book.
  select array_agg(r.store_id), array_agg(r.book_id), array_agg(r.n), array_agg(r.order_id)
    into restock_stores, restock_books, restock_counts, restock_orders
    from (select n.store_id, d.book_id, sum(d.count)::integer as n, min(n.order_id) as order_id
            from new_orders n
            join old_orders o using (order_id)
            cross join lateral (select d.book_id, d.count from public.new_order_detail d
                                 where d.order_id = n.order_id offset 0) d
           where o.state in (0, 1) and n.state = 4
           group by n.store_id, d.book_id) r;
  if restock_stores is not null then
    perform order_automation.move_stock(restock_stores, restock_books, restock_counts, restock_orders);
  end if;

  insert into order_automation.order_event (order_id, from_state, to_state, cause)
  select n.order_id, o.state, n.state, event_cause
    from old_orders o join new_orders n using (order_id)
   where o.state <> n.state;
  perform pg_notify('order_automation', 'order_event');
  return null;
end $$;

create or replace trigger _900_lifecycle after update on public.new_order
referencing old table as old_orders new table as new_orders
for each statement execute function order_automation.tg_new_order__after_update();

create or replace function order_automation.tg_new_order__after_delete() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  bad record;
  -- Once per statement, not per row: a function with a SET clause is never inlined.
  event_cause text := order_automation.current_cause();
begin
  -- Paid, shipped and received orders hold money: they are never deleted, only cancelled or kept.
  select o.order_id, o.state into bad from old_orders o where o.state in (1, 2, 3) limit 1;
  if found then
    raise exception using errcode = 'OA001',
      message = format('order %s cannot be deleted in state %s', bad.order_id, bad.state),
      hint = 'Only unpaid (0) and cancelled (4) orders can be deleted.';
  end if;
  insert into order_automation.order_event (order_id, from_state, to_state, cause)
  select o.order_id, o.state, null, event_cause from old_orders o;
  perform pg_notify('order_automation', 'order_event');
  return null;
end $$;

create or replace trigger _900_deleted after delete on public.new_order
referencing old table as old_orders
for each statement execute function order_automation.tg_new_order__after_delete();

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

create or replace function order_automation.process_orders(job text, ids text[]) returns bigint
language plpgsql
-- As the package's owner: only this code path may claim the jobs' causes (order_automation.job_claim).
-- Whoever may call it can therefore do no more than the job itself: each statement re-checks the
-- state the job moves orders from, and skips held orders.
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  n bigint;
begin
  -- Set-based: the lifecycle triggers book the whole set in one pass.
  case process_orders.job
    when 'cancel_expired_orders' then
      perform order_automation.claim_cause('payment_timeout');
      update public.new_order o set state = 4, cancelled_at = now()
       where o.order_id = any (process_orders.ids) and o.state = 0 and o.held_at is null;
    when 'confirm_shipped_orders' then
      perform order_automation.claim_cause('receipt_timeout');
      update public.new_order o set state = 3, received_at = now()
       where o.order_id = any (process_orders.ids) and o.state = 2 and o.held_at is null;
    when 'purge_cancelled_orders' then
      perform order_automation.claim_cause('purge_cancelled_orders');
      delete from public.new_order_detail d using public.new_order o
       where d.order_id = any (process_orders.ids) and o.order_id = any (process_orders.ids)
         and o.order_id = d.order_id and o.state = 4;
      delete from public.new_order o where o.order_id = any (process_orders.ids) and o.state = 4;
  end case;
  get diagnostics n = row_count;
  perform order_automation.claim_cause(null);
  return n;
end $$;
comment on function order_automation.process_orders(text, text[]) is
  'Applies a job to orders due_orders() locked: cancel (unpaid ones), confirm (shipped ones), or delete (cancelled ones), none of them held; returns how many';

create or replace function order_automation.process_due_batch(
  job text, as_of timestamptz, batch_size integer, run_id bigint, skip_ids text[],
  out processed bigint, out failed text[]
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
  err_state text;
  err_message text;
begin
  processed := 0;
  failed := '{}'::text[];
  if cardinality(ids) = 0 then
    return;
  end if;
  begin
    processed := order_automation.process_orders(process_due_batch.job, ids);
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
      processed := processed + order_automation.process_orders(process_due_batch.job, array[one]);
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
  'One batch of a run: processes up to batch_size due orders not in skip_ids; returns how many, and the orders that failed (recorded in order_failure)';

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
as $$
declare
  ahead interval := (select s.remind_before from order_automation.settings s);
  horizon timestamptz;
  soon_state smallint;
  ids text[];
  one text;
  reminded bigint := 0;
  n bigint;
  err_state text;
  err_message text;
begin
  if ahead is null or remind_due_soon.job is null
     or remind_due_soon.job not in ('cancel_expired_orders', 'confirm_shipped_orders') then
    return 0;
  end if;
  soon_state := case remind_due_soon.job when 'cancel_expired_orders' then 0 else 2 end;
  -- A reminder is a side step of the run: best effort. Rows others hold are skipped (reminded by a
  -- later run), a row that fails is skipped and recorded, at most max_orders are taken per run, and
  -- nothing here ever fails the run (but a cancel, which the run records).
  begin
    begin
      horizon := remind_due_soon.as_of + ahead;
    exception when datetime_field_overflow then
      horizon := 'infinity';  -- so far ahead that every future deadline is near
    end;
    if soon_state = 0 then
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = 0 and o.held_at is null
                 and o.pay_deadline > remind_due_soon.as_of and o.pay_deadline <= horizon
                 and o.reminded_state is distinct from 0
               order by o.pay_deadline
               limit greatest(remind_due_soon.max_orders, 1)
                 for no key update skip locked) d;
    else
      select array_agg(d.order_id) into ids
        from (select o.order_id from public.new_order o
               where o.state = 2 and o.held_at is null
                 and o.receipt_deadline > remind_due_soon.as_of and o.receipt_deadline <= horizon
                 and o.reminded_state is distinct from 2
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
begin
  -- reminded_state marks the order in the same statement: a concurrent run re-checks it on the
  -- locked row and writes no second reminder.
  with soon as (
    update public.new_order o set reminded_state = write_reminders.soon_state
     where o.order_id = any (write_reminders.ids) and o.state = write_reminders.soon_state
       and o.reminded_state is distinct from write_reminders.soon_state
    returning o.order_id, case write_reminders.soon_state when 0 then o.pay_deadline else o.receipt_deadline end as deadline)
  insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
  select soon.order_id, write_reminders.soon_state, write_reminders.soon_state,
         case write_reminders.soon_state when 0 then 'payment_due_soon' else 'receipt_due_soon' end,
         format(case write_reminders.soon_state when 0 then 'pay deadline %s' else 'receipt deadline %s' end, soon.deadline)
    from soon;
  get diagnostics n = row_count;
  return n;
end $$;
comment on function order_automation.write_reminders(smallint, text[]) is
  'Marks the orders ids (locked by remind_due_soon) reminded in state soon_state and writes their due-soon events; returns how many';

-- The driver commits after every batch, and a procedure with a SET clause cannot COMMIT: so it has
-- none. Everything in it is therefore written so that the caller's search_path cannot reach it:
-- functions and operators schema-qualified (OPERATOR(pg_catalog.x); BETWEEN and IN expand to
-- unqualified operators, so they are not used), types either SQL keywords (bigint, integer,
-- interval, boolean) or qualified (pg_catalog.text, pg_catalog.timestamptz), no record variable.
-- It cannot SET lock_timeout either: it sets it at the start of each of its transactions, so a lock
-- held forever on one of the package's tables ends the run instead of hanging the schedule.
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
  batch_processed bigint;
  batch_failed pg_catalog.text[];
  failed_count bigint := 0;
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
  loop
    exit when err_state is not null;
    perform pg_catalog.set_config('lock_timeout', '5s', true);
    begin
      select b.processed, b.failed into batch_processed, batch_failed
        from order_automation.process_due_batch(run_due_orders.job, run_as_of, run_batch_size, run_id, skip_ids) b;
    -- query_canceled too (a cancel request, a caller's statement_timeout): the run records it, then re-raises.
    exception when others or query_canceled then
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
    end;
    exit when err_state is not null;
    processed := processed operator(pg_catalog.+) batch_processed;
    failed_count := failed_count operator(pg_catalog.+) pg_catalog.cardinality(batch_failed);
    skip_ids := skip_ids operator(pg_catalog.||) batch_failed;
    update order_automation.run r
       set processed = run_due_orders.processed, failed = failed_count
     where r.id operator(pg_catalog.=) run_id;
    commit;
    -- A short batch means nothing else is due (or it is locked by another run, which will do it).
    exit when batch_processed operator(pg_catalog.+) pg_catalog.cardinality(batch_failed) operator(pg_catalog.<) run_batch_size;
    exit when pg_catalog.clock_timestamp() operator(pg_catalog.-) started operator(pg_catalog.>=) budget;
  end loop;

  perform pg_catalog.set_config('lock_timeout', '5s', true);
  update order_automation.run r
     set finished_at = pg_catalog.clock_timestamp(), processed = run_due_orders.processed,
         failed = failed_count,
         error = case when err_state is not null then pg_catalog.format('%s (SQLSTATE %s)', err_message, err_state) end
   where r.id operator(pg_catalog.=) run_id;
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
  call order_automation.run_due_orders('cancel_expired_orders', cancel_expired_orders.as_of,
                                       cancel_expired_orders.batch_size, cancelled);
  perform pg_catalog.set_config('lock_timeout', '5s', true);
  -- purge_cancelled_after = 0 is the reference behaviour: cancelled orders are deleted at once.
  if (select s.purge_cancelled_after from order_automation.settings s) operator(pg_catalog.=) interval '0' then
    call order_automation.purge_cancelled_orders(cancel_expired_orders.as_of, cancel_expired_orders.batch_size, purged);
  end if;
end $$;
comment on procedure order_automation.cancel_expired_orders(timestamptz, integer, bigint) is
  'Cancels every unpaid order with pay_deadline <= as_of (default now): books back on the shelf. Returns cancelled. Call it outside a transaction block: it commits after each batch';

create or replace procedure order_automation.confirm_shipped_orders(
  as_of timestamptz default null, batch_size integer default null, inout confirmed bigint default null
)
language plpgsql
as $$
begin
  call order_automation.run_due_orders('confirm_shipped_orders', confirm_shipped_orders.as_of,
                                       confirm_shipped_orders.batch_size, confirmed);
end $$;
comment on procedure order_automation.confirm_shipped_orders(timestamptz, integer, bigint) is
  'Marks received every shipped order with receipt_deadline <= as_of (default now): sellers are paid. Returns confirmed. Call it outside a transaction block: it commits after each batch';

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

-- >>> 400_schedule.sql
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

-- >>> 500_status.sql
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
  cron_state text, cron_schedule text
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
         -- NULL: pg_cron lives in another database, where the caller reads it.
         case when j.cron_database is null then 'not scheduled'
              when here.pg_cron is null then null
              when c.jobid is null then 'missing'
              when c.active then 'active'
              else 'paused' end,
         c.schedule
    from order_automation.job j
    cross join (select order_automation.cron_schema() as pg_cron) here
    left join order_automation.pg_cron_jobs() c on c.job = j.job
    left join lateral (select * from order_automation.run r where r.job = j.job order by r.id desc limit 1) r on true
   order by j.job
$$;
comment on function order_automation.job_status(timestamptz) is
  'Per job: schedule, active, last run (start, end, orders processed, failures, error), orders due at `at`, orders held, the next deadline after it, and its state in pg_cron (active, paused, missing, not scheduled; NULL when pg_cron lives in another database)';

-- >>> 600_privileges.sql
-- Least privilege: nothing of the package is executable by PUBLIC. Two roles (NOLOGIN; grant them to
-- your login roles): order_automation_app runs the lifecycle, order_automation_admin also the
-- automation, its settings and its schedule. pg_cron runs the jobs as the role that installed them,
-- so nothing either role may write is ever part of what pg_cron runs.

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

-- Every right is listed here, by name, and the privilege matrix test holds the same decisions: a new
-- object gets no right until it is added below. Revoking first makes an upgrade end where a fresh
-- install does (an earlier release granted more).
revoke all on schema order_automation from public;
revoke all on all tables in schema order_automation from public;
revoke all on all sequences in schema order_automation from public;
revoke all on all functions in schema order_automation from public;
revoke all on all procedures in schema order_automation from public;

do $$
begin
  if exists (select from pg_roles where rolname = 'order_automation_app') then
    revoke all on all tables in schema order_automation from order_automation_app;
    revoke all on all sequences in schema order_automation from order_automation_app;
    revoke all on all functions in schema order_automation from order_automation_app;
    revoke all on all procedures in schema order_automation from order_automation_app;
    revoke all on public.new_order, public.new_order_detail, public."user", public.user_store, public.store
      from order_automation_app;
    grant usage on schema order_automation to order_automation_app;
    grant select, insert, update, delete on public.new_order, public.new_order_detail to order_automation_app;
    grant select, insert, update on public."user", public.user_store, public.store to order_automation_app;
    grant select on order_automation.order_event, order_automation.settings, order_automation.store_settings
      to order_automation_app;
    -- set_order_state takes any cause but the jobs' (current_cause() refuses those without a claim).
    grant execute on function
      order_automation.place_order(text, text, text, jsonb), order_automation.pay_order(text),
      order_automation.ship_order(text), order_automation.confirm_receipt(text), order_automation.cancel_order(text),
      order_automation.payment_started(text, interval), order_automation.extend_receipt(text, interval),
      order_automation.hold(text, text), order_automation.release(text),
      order_automation.set_order_state(text, smallint, text)
      to order_automation_app;
  end if;
  if exists (select from pg_roles where rolname = 'order_automation_admin') then
    if exists (select from pg_roles where rolname = 'order_automation_app') then
      grant order_automation_app to order_automation_admin;
    end if;
    revoke all on all tables in schema order_automation from order_automation_admin;
    revoke all on all sequences in schema order_automation from order_automation_admin;
    revoke all on all functions in schema order_automation from order_automation_admin;
    revoke all on all procedures in schema order_automation from order_automation_admin;
    revoke all on public.new_order, public.new_order_detail, public."user", public.user_store, public.store
      from order_automation_admin;
    grant usage on schema order_automation to order_automation_admin;
    grant select, update on order_automation.settings to order_automation_admin;
    grant select, insert, update, delete on order_automation.store_settings to order_automation_admin;
    -- The procedures commit, so they cannot run as the owner: running them takes the rights they use
    -- (the run log, the failures, locking due orders), and EXECUTE on the routines they call.
    grant select, insert, update, delete on order_automation.run to order_automation_admin;
    grant select, insert on order_automation.order_failure to order_automation_admin;
    -- Read only: pg_cron's commands are fixed by job_command(), and schedules change through set_schedule().
    grant select on order_automation.job, order_automation.order_event to order_automation_admin;
    grant execute on procedure
      order_automation.cancel_expired_orders(timestamptz, integer, bigint),
      order_automation.confirm_shipped_orders(timestamptz, integer, bigint),
      order_automation.purge_cancelled_orders(timestamptz, integer, bigint),
      order_automation.purge_history(bigint),
      order_automation.run_due_orders(text, timestamptz, integer, bigint)
      to order_automation_admin;
    grant execute on function
      order_automation.due_orders(text, timestamptz, integer, text[]),
      order_automation.process_due_batch(text, timestamptz, integer, bigint, text[]),
      order_automation.process_orders(text, text[]),
      order_automation.remind_due_soon(text, timestamptz, bigint, integer),
      order_automation.cron_jobname(text), order_automation.cron_schema(), order_automation.cron_database(),
      order_automation.job_status(timestamptz), order_automation.pg_cron_jobs(),
      order_automation.set_schedule(text, text, boolean)
      to order_automation_admin;
  end if;
end $$;
