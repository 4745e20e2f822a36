-- The order lifecycle on new_order: a guard that refuses illegal state changes and the
-- set-based bookkeeping of each change (money, stock, history), the same for every writer.
-- Trigger names carry a number because PostgreSQL fires the triggers of one event in name order:
-- _040_ before _050_ before _100_ before _900_ (guards first, bookkeeping and history last).
-- The state codes are the settings' (state_unpaid ...), and so is the bookkeeping: 'full' books and
-- guards every writer; 'automation' (an adopted app that books its own changes) records every change
-- but books only the package's own jobs, and keeps what they did.

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
declare
  s order_automation.settings;
begin
  select * into s from order_automation.settings;
  if s.bookkeeping = 'full' and new.state is distinct from s.state_unpaid then
    raise exception using errcode = 'OA001',
      message = format('order %s must be placed %s, not %s', new.order_id,
                       order_automation.state_label(s.state_unpaid), order_automation.state_label(new.state));
  end if;
  -- An adopted table's created_at has no default (adding one would stamp every existing order).
  new.created_at := coalesce(new.created_at, now());
  if new.pay_deadline is null then
    new.pay_deadline := new.created_at + coalesce(
      (select ss.payment_timeout from order_automation.store_settings ss where ss.store_id = new.store_id),
      s.payment_timeout);
  end if;
  -- An app that does its own bookkeeping may write an order already shipped: its countdown starts now.
  if new.state = s.state_shipped and new.receipt_deadline is null then
    new.shipped_at := coalesce(new.shipped_at, now());
    new.receipt_deadline := new.shipped_at + coalesce(
      (select ss.receipt_timeout from order_automation.store_settings ss where ss.store_id = new.store_id),
      s.receipt_timeout);
  end if;
  return new;
end $$;

create or replace trigger _100_place before insert on public.new_order
for each row execute function order_automation.tg_new_order__before_insert();

create or replace function order_automation.tg_new_order__keep_outcome() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  by_job order_automation.order_event;
begin
  -- In 'full' bookkeeping every change out of a final state is refused after the statement; here,
  -- in 'automation', only what the package's jobs did is final. Refused even when the app writes
  -- the same state again: an app that read the order before the job closed it and now "cancels" or
  -- "confirms" it would book its refund or its credit a second time.
  if order_automation.current_cause() in ('payment_timeout', 'receipt_timeout')
     or (select s.bookkeeping from order_automation.settings s) <> 'automation' then
    return new;
  end if;
  select e.* into by_job from order_automation.order_event e
   where e.order_id = old.order_id and e.to_state = old.state and e.cause in ('payment_timeout', 'receipt_timeout')
   order by e.id desc
   limit 1;
  if found then
    raise exception using errcode = 'OA001',
      message = format('order %s was closed by the automation (%s at %s): it stays %s',
                       old.order_id, by_job.cause, by_job.at, order_automation.state_label(old.state)),
      hint = 'The automation has booked it (books back on the shelf, or the seller paid): do not book it again.';
  end if;
  return new;
end $$;

-- Only orders with a cancelled_at or received_at can have been closed by a job: the rest pay no call.
create or replace trigger _040_keep_outcome before update of state on public.new_order
for each row when (old.cancelled_at is not null or old.received_at is not null)
execute function order_automation.tg_new_order__keep_outcome();

create or replace function order_automation.tg_new_order__keep_identity() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- An app that books its own changes may move an order; the automation books it where it is then.
  if (select s.bookkeeping from order_automation.settings s) = 'automation' then
    return new;
  end if;
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
declare
  s order_automation.settings;
begin
  select * into s from order_automation.settings;
  if new.state = s.state_paid then
    new.paid_at := coalesce(new.paid_at, now());
  elsif new.state = s.state_shipped then
    new.shipped_at := coalesce(new.shipped_at, now());
    new.receipt_deadline := coalesce(new.receipt_deadline, new.shipped_at + coalesce(
      (select ss.receipt_timeout from order_automation.store_settings ss where ss.store_id = new.store_id),
      s.receipt_timeout));
  elsif new.state = s.state_received then
    new.received_at := coalesce(new.received_at, now());
  elsif new.state = s.state_cancelled then
    new.cancelled_at := coalesce(new.cancelled_at, now());
  end if;
  return new;
end $$;

-- Fires for a change of state that does not itself stamp cancelled_at or received_at (a trigger's
-- condition cannot read the state codes in settings). The automation stamps one of them, so its
-- set-based updates pay no per-row PL/pgSQL call.
create or replace trigger _100_stamp before update of state on public.new_order
for each row when (old.state is distinct from new.state
                   and old.cancelled_at is not distinct from new.cancelled_at
                   and old.received_at is not distinct from new.received_at)
execute function order_automation.tg_new_order__stamp();

create or replace function order_automation.tg_new_order__after_insert() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  s order_automation.settings;
  stores text[]; books text[]; counts integer[]; orders text[];
  -- Once per statement, not per row: a function with a SET clause is never inlined.
  event_cause text := order_automation.current_cause();
begin
  -- Lines the same statement changed are settled first (097_one_statement.sql).
  if order_automation.close_statement('new_order') then
    perform order_automation.settle_order_statement(array_agg(n.order_id), array_agg(n.store_id), array_agg(null::integer))
       from new_orders n;
  end if;
  select * into s from order_automation.settings;
  if s.bookkeeping = 'full' then
    -- Lines written before their order (an adopted app does so in one transaction, and its tables
    -- have no foreign key to stop it) hold their books from the moment the order exists.
    select array_agg(r.store_id), array_agg(r.book_id), array_agg(r.n), array_agg(r.order_id)
      into stores, books, counts, orders
      from (select n.store_id, d.book_id, -sum(d.count)::integer as n, min(n.order_id) as order_id
              from new_orders n
              cross join lateral (select d.book_id, d.count from public.new_order_detail d
                                   where d.order_id = n.order_id offset 0) d
             where n.state = s.state_unpaid
             group by n.store_id, d.book_id) r;
    if stores is not null then
      perform order_automation.move_stock(stores, books, counts, orders);
    end if;
  end if;
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
-- Its plans are cached per session: one planned for a statement of 20,000 orders would otherwise be
-- JIT-compiled again for every one-order statement after it (about 20 ms each).
set jit = off
as $$
declare
  s order_automation.settings;
  changed bigint;
  bad_order text; bad_from integer; bad_to integer;
  paid_ids text[]; refunded_ids text[]; received_ids text[]; cancelled_ids text[];
  money_users text[]; money_deltas bigint[]; money_orders text[];
  -- Once per statement, not per row: a function with a SET clause is never inlined.
  event_cause text := order_automation.current_cause();
  job text := case event_cause when 'payment_timeout' then 'cancel_expired_orders'
                               when 'receipt_timeout' then 'confirm_shipped_orders' end;
begin
  if order_automation.close_statement('new_order') then
    perform order_automation.settle_order_statement(array_agg(o.order_id), array_agg(o.store_id), array_agg(o.state::integer))
       from old_orders o join new_orders n using (order_id)
      where o.state is distinct from n.state;
  end if;
  select * into s from order_automation.settings;
  -- One pass over the changed rows: count them, sort them by transition, find an illegal one.
  select count(*),
         array_agg(x.order_id) filter (where x.from_state = s.state_unpaid and x.to_state = s.state_paid),
         array_agg(x.order_id) filter (where x.from_state = s.state_paid and x.to_state = s.state_cancelled),
         array_agg(x.order_id) filter (where x.from_state = s.state_shipped and x.to_state = s.state_received),
         array_agg(x.order_id) filter (where x.from_state in (s.state_unpaid, s.state_paid) and x.to_state = s.state_cancelled),
         (array_agg(x.order_id) filter (where not x.legal))[1],
         (array_agg(x.from_state) filter (where not x.legal))[1],
         (array_agg(x.to_state) filter (where not x.legal))[1]
    into changed, paid_ids, refunded_ids, received_ids, cancelled_ids, bad_order, bad_from, bad_to
    from (select o.order_id, o.state as from_state, n.state as to_state,
                 coalesce((o.state, n.state) in ((s.state_unpaid, s.state_paid), (s.state_paid, s.state_shipped),
                                                 (s.state_shipped, s.state_received), (s.state_unpaid, s.state_cancelled),
                                                 (s.state_paid, s.state_cancelled)), false) as legal
            from old_orders o join new_orders n using (order_id)
           where o.state is distinct from n.state) x;
  if changed = 0 then
    return null;
  end if;
  if bad_order is not null and s.bookkeeping = 'full' then
    raise exception using errcode = 'OA001',
      message = format('order %s cannot change from %s to %s', bad_order,
                       order_automation.state_label(bad_from), order_automation.state_label(bad_to)),
      hint = format('Allowed: unpaid (%s) -> paid (%s) -> shipped (%s) -> received (%s); unpaid or paid -> cancelled (%s).',
                    s.state_unpaid, s.state_paid, s.state_shipped, s.state_received, s.state_cancelled);
  end if;

  if job is not null then
    -- The package's own jobs, in both bookkeepings: booked by the one function the procedures can
    -- also call themselves, on the orders the job changed.
    perform order_automation.book_job_outcomes(job, coalesce(cancelled_ids, received_ids));
  elsif s.bookkeeping = 'full' then
    -- Money held by orders moves between balances, summed per user into one movement each.
    select array_agg(m.user_id order by m.user_id), array_agg(m.delta order by m.user_id),
           array_agg(m.order_id order by m.user_id)
      into money_users, money_deltas, money_orders
      from (select t.user_id, sum(t.delta)::bigint as delta, min(t.order_id) as order_id
              from (select n.user_id, case when n.order_id = any (paid_ids) then -l.total else l.total end as delta,
                           n.order_id
                      from new_orders n
                      -- One primary-key probe per changed order, whatever the statistics of the lines
                      -- say (after a purge they may say "empty": driven from them, this turns quadratic).
                      cross join lateral (select sum(d.count::bigint * d.price)::bigint as total
                                            from public.new_order_detail d where d.order_id = n.order_id offset 0) l
                     where n.order_id = any (paid_ids) or n.order_id = any (refunded_ids)  -- paid; refunded
                    union all
                    select c.user_id, c.total, c.order_id                                 -- the seller is paid
                      from order_automation.seller_credits(received_ids) c
                     where received_ids is not null) t
             group by t.user_id) m
     where m.delta <> 0;
    if money_users is not null then
      perform order_automation.move_money(money_users, money_deltas, money_orders);
    end if;
    -- Cancelled orders put their books back on the shelf.
    if cancelled_ids is not null then
      perform order_automation.restock(cancelled_ids);
    end if;
  end if;

  insert into order_automation.order_event (order_id, from_state, to_state, cause)
  select n.order_id, o.state, n.state, event_cause
    from old_orders o join new_orders n using (order_id)
   where o.state is distinct from n.state;
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
  s order_automation.settings;
  bad record;
  -- Once per statement, not per row: a function with a SET clause is never inlined.
  event_cause text := order_automation.current_cause();
begin
  if order_automation.close_statement('new_order') then
    perform order_automation.settle_order_statement(array_agg(o.order_id), array_agg(o.store_id), array_agg(o.state::integer))
       from old_orders o;
  end if;
  select * into s from order_automation.settings;
  -- Paid, shipped and received orders hold money: they are never deleted, only cancelled or kept
  -- (unless the app books its own changes).
  if s.bookkeeping = 'full' then
    select o.order_id, o.state into bad from old_orders o
     where o.state in (s.state_paid, s.state_shipped, s.state_received) limit 1;
    if found then
      raise exception using errcode = 'OA001',
        message = format('order %s cannot be deleted while %s', bad.order_id, order_automation.state_label(bad.state)),
        hint = format('Only unpaid (%s) and cancelled (%s) orders can be deleted.', s.state_unpaid, s.state_cancelled);
    end if;
  end if;
  insert into order_automation.order_event (order_id, from_state, to_state, cause)
  select o.order_id, o.state, null, event_cause from old_orders o;
  perform pg_notify('order_automation', 'order_event');
  return null;
end $$;

create or replace trigger _900_deleted after delete on public.new_order
referencing old table as old_orders
for each statement execute function order_automation.tg_new_order__after_delete();
