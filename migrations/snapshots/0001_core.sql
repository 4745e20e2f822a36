-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0001_core.ts. Never edit.

-- >>> 010_bookstore.sql
-- The bookstore's own tables (SPEC §2): users and their balances, stores and their stock,
-- orders and their lines. Apps may add columns; the package relies on the ones below.

create table public."user" (
  user_id text primary key,
  balance bigint not null default 0 check (balance >= 0)
);

create table public.user_store (
  store_id text primary key,
  user_id text not null references public."user"
);

create table public.store (
  store_id text references public.user_store,
  book_id text,
  stock_level integer not null check (stock_level >= 0),
  primary key (store_id, book_id)
);

create table public.new_order (
  order_id text primary key,
  user_id text not null references public."user",
  store_id text not null references public.user_store,
  state smallint not null default 0,
  created_at timestamptz not null default now(),
  paid_at timestamptz,
  shipped_at timestamptz,
  received_at timestamptz,
  cancelled_at timestamptz,
  pay_deadline timestamptz,
  receipt_deadline timestamptz
);

comment on column public.new_order.state is
  '0 unpaid, 1 paid, 2 shipped, 3 received, 4 cancelled; transitions are guarded by order_automation triggers';

create table public.new_order_detail (
  order_id text references public.new_order,
  book_id text,
  count integer not null check (count > 0),
  price bigint not null check (price >= 0),
  primary key (order_id, book_id)
);

-- What the automation probes every tick: only the orders that can still become due are indexed,
-- so a tick with nothing due is an index probe however large the table grows.
create index new_order_pay_deadline_due on public.new_order (pay_deadline) where state = 0;
create index new_order_receipt_deadline_due on public.new_order (receipt_deadline) where state = 2;
create index new_order_user_id on public.new_order (user_id);
create index new_order_store_id on public.new_order (store_id);

-- >>> 020_automation_schema.sql
-- The order_automation schema: its settings, the order history (order_event), the run log and the
-- per-order failures of runs. Error codes raised by the package are listed below, once.
--
-- SQLSTATEs (class OA):
--   OA001 invalid_transition    a state change (or delete) the lifecycle does not allow
--   OA002 insufficient_stock    reserving books the store does not have (or does not sell)
--   OA003 insufficient_balance  paying an order the buyer cannot afford
--   OA004 order_not_modifiable  changing the lines of an order that is no longer unpaid
--   OA005 order_not_found       a package function named an order that does not exist
--   OA006 invalid_argument      a bad argument to a package routine (batch_size, items, schedule, ...)
--   OA010 pg_cron_unavailable   pg_cron is missing, not preloaded, or lives in another database

create schema order_automation;
comment on schema order_automation is
  'order-automation: auto-cancel of unpaid orders and auto-confirm of shipped ones, scheduled by pg_cron';

create table order_automation.settings (
  singleton boolean primary key default true,
  payment_timeout interval not null default '10 minutes',
  receipt_timeout interval not null default '60 seconds',
  batch_size integer not null default 1000,
  max_run_time interval not null default '50 seconds',
  -- Constraint names are the messages a user sees when a value is refused.
  constraint "settings has exactly one row" check (singleton),
  constraint "payment_timeout must be a positive interval" check (payment_timeout > interval '0'),
  constraint "receipt_timeout must be a positive interval" check (receipt_timeout > interval '0'),
  constraint "batch_size must be between 1 and 1000000" check (batch_size between 1 and 1000000),
  constraint "max_run_time must be between 1 second and 1 day"
    check (max_run_time between interval '1 second' and interval '1 day')
);
insert into order_automation.settings default values;
comment on table order_automation.settings is
  'Exactly one row: deadlines of new orders / shipments, batch size and time budget of each run';
comment on column order_automation.settings.max_run_time is
  'A run stops starting new batches after this long, so it ends before the next pg_cron tick';

create table order_automation.order_event (
  id bigint generated always as identity primary key,
  order_id text not null,
  from_state smallint,
  to_state smallint,
  cause text not null,
  at timestamptz not null default now()
);
create index order_event_order_id on order_automation.order_event (order_id, id);
comment on table order_automation.order_event is
  'Every state change of every order (from_state NULL: placed; to_state NULL: deleted). Causes of the automation: payment_timeout, receipt_timeout';

create table order_automation.run (
  id bigint generated always as identity primary key,
  job text not null,
  as_of timestamptz not null,
  batch_size integer not null,
  started_at timestamptz not null default clock_timestamp(),
  finished_at timestamptz,
  processed bigint not null default 0,
  failed bigint not null default 0,
  error text
);
create index run_job_started on order_automation.run (job, id desc);
comment on table order_automation.run is
  'One row per run of a procedure; finished_at NULL means running, or killed before it could finish';

create table order_automation.order_failure (
  id bigint generated always as identity primary key,
  run_id bigint not null references order_automation.run on delete cascade,
  order_id text not null,
  sqlstate text not null,
  message text not null,
  at timestamptz not null default clock_timestamp()
);
create index order_failure_run on order_automation.order_failure (run_id);
comment on table order_automation.order_failure is
  'Orders a run skipped because processing them raised an error; they are retried by the next run';

create table order_automation.job (
  job text primary key,
  command text not null,
  schedule text not null default '* * * * *',
  cron_database text
);
comment on table order_automation.job is
  'The scheduled jobs of the package: the command pg_cron runs, its cron schedule, and the database whose pg_cron runs it (NULL: not scheduled)';
insert into order_automation.job (job, command) values
  ('cancel_expired_orders', 'CALL order_automation.cancel_expired_orders()'),
  ('confirm_shipped_orders', 'CALL order_automation.confirm_shipped_orders()');

-- >>> 090_stock.sql
-- Moving books on and off the shelf (store.stock_level), set-based, for every writer of orders:
-- placing lines reserves, cancelling restores. Never leaves stock negative, never deadlocks.

create or replace function order_automation.move_stock(
  store_ids text[], book_ids text[], deltas integer[], order_ids text[]
) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  short record;
begin
  -- Lock the stock rows in (store_id, book_id) order, so that concurrent writers queue instead of
  -- deadlocking whatever order their own rows come in.
  perform 1
     from public.store s
     join unnest(move_stock.store_ids, move_stock.book_ids) as k(store_id, book_id)
       on s.store_id = k.store_id and s.book_id = k.book_id
    order by s.store_id, s.book_id
      for no key update of s;

  with m as (
    select * from unnest(move_stock.store_ids, move_stock.book_ids, move_stock.deltas, move_stock.order_ids)
             as m(store_id, book_id, delta, order_id)
  ), moved as (
    update public.store s set stock_level = s.stock_level + m.delta
      from m
     where s.store_id = m.store_id and s.book_id = m.book_id and s.stock_level + m.delta >= 0
    returning s.store_id, s.book_id
  )
  select m.order_id, m.store_id, m.book_id, -m.delta as wanted, s.stock_level
    into short
    from m
    left join public.store s on s.store_id = m.store_id and s.book_id = m.book_id
   where not exists (select from moved where moved.store_id = m.store_id and moved.book_id = m.book_id)
   limit 1;

  if found then
    if short.stock_level is null then
      raise exception using errcode = 'OA002',
        message = format('order %s: store %s does not stock book %s', short.order_id, short.store_id, short.book_id);
    end if;
    raise exception using errcode = 'OA002',
      message = format('order %s: store %s has %s of book %s, %s wanted',
                       short.order_id, short.store_id, short.stock_level, short.book_id, short.wanted);
  end if;
end $$;
comment on function order_automation.move_stock(text[], text[], integer[], text[]) is
  'Adds deltas[i] to the stock of (store_ids[i], book_ids[i]); one entry per store and book. Raises OA002 naming order_ids[i] when stock would go negative or the book is not stocked.';

-- >>> 100_order_lifecycle.sql
-- The order lifecycle on new_order (SPEC §3): a guard that refuses illegal state changes and the
-- set-based bookkeeping of each change (money, stock, history), the same for every writer.

-- Which writer changed an order: package routines set order_automation.cause for their transaction;
-- a plain UPDATE by an app is recorded as 'sql'.
create or replace function order_automation.current_cause() returns text
language sql stable
set search_path = pg_catalog, pg_temp
as $$ select coalesce(nullif(current_setting('order_automation.cause', true), ''), 'sql') $$;
comment on function order_automation.current_cause() is
  'The cause recorded in order_event for changes made by the current transaction';

create or replace function order_automation.tg_new_order__before_insert() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if new.state <> 0 then
    raise exception using errcode = 'OA001',
      message = format('order %s must be placed unpaid (state 0), not in state %s', new.order_id, new.state);
  end if;
  if new.pay_deadline is null then
    new.pay_deadline := new.created_at + (select s.payment_timeout from order_automation.settings s);
  end if;
  return new;
end $$;

create or replace trigger _100_place before insert on public.new_order
for each row execute function order_automation.tg_new_order__before_insert();

create or replace function order_automation.tg_new_order__keep_identity() returns trigger
language plpgsql
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
set search_path = pg_catalog, pg_temp
as $$
begin
  case new.state
    when 1 then new.paid_at := coalesce(new.paid_at, now());
    when 2 then
      new.shipped_at := coalesce(new.shipped_at, now());
      new.receipt_deadline := coalesce(new.receipt_deadline,
        new.shipped_at + (select s.receipt_timeout from order_automation.settings s));
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
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into order_automation.order_event (order_id, from_state, to_state, cause)
  select n.order_id, null, n.state, order_automation.current_cause() from new_orders n;
  perform pg_notify('order_automation', 'order_event');
  return null;
end $$;

create or replace trigger _900_placed after insert on public.new_order
referencing new table as new_orders
for each statement execute function order_automation.tg_new_order__after_insert();

create or replace function order_automation.tg_new_order__after_update() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  changed bigint;
  bad_order text; bad_from smallint; bad_to smallint;
  debit_users text[]; debit_totals bigint[];
  credit_users text[]; credit_totals bigint[];
  restock_stores text[]; restock_books text[]; restock_counts integer[]; restock_orders text[];
  short_user text;
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
                    from old_orders o
                    join new_orders n using (order_id)
                    join public.new_order_detail d on d.order_id = n.order_id
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
            from old_orders o
            join new_orders n using (order_id)
            join public.new_order_detail d on d.order_id = n.order_id
           where o.state in (0, 1) and n.state = 4
           group by n.store_id, d.book_id) r;
  if restock_stores is not null then
    perform order_automation.move_stock(restock_stores, restock_books, restock_counts, restock_orders);
  end if;

  insert into order_automation.order_event (order_id, from_state, to_state, cause)
  select n.order_id, o.state, n.state, order_automation.current_cause()
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
set search_path = pg_catalog, pg_temp
as $$
declare
  bad record;
begin
  -- Paid, shipped and received orders hold money: they are never deleted, only cancelled or kept.
  select o.order_id, o.state into bad from old_orders o where o.state in (1, 2, 3) limit 1;
  if found then
    raise exception using errcode = 'OA001',
      message = format('order %s cannot be deleted in state %s', bad.order_id, bad.state),
      hint = 'Only unpaid (0) and cancelled (4) orders can be deleted.';
  end if;
  insert into order_automation.order_event (order_id, from_state, to_state, cause)
  select o.order_id, o.state, null, order_automation.current_cause() from old_orders o;
  perform pg_notify('order_automation', 'order_event');
  return null;
end $$;

create or replace trigger _900_deleted after delete on public.new_order
referencing old table as old_orders
for each statement execute function order_automation.tg_new_order__after_delete();

-- >>> 110_order_detail.sql
-- The lines of an order (new_order_detail): adding, changing or removing lines of an unpaid order
-- reserves or returns its books; the lines of any other order are frozen (cancelled ones may be purged).

create or replace function order_automation.tg_new_order_detail__reserve() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  line_orders text[] := '{}'::text[];
  line_books text[] := '{}'::text[];
  line_deltas integer[] := '{}'::integer[];
  bad_order text;
  bad_state smallint;
  stores text[]; books text[]; deltas integer[]; orders text[];
begin
  -- Added lines take books off the shelf, removed lines put them back.
  if tg_op in ('INSERT', 'UPDATE') then
    select line_orders || array_agg(l.order_id), line_books || array_agg(l.book_id), line_deltas || array_agg(-l.count)
      into line_orders, line_books, line_deltas
      from new_lines l;
  end if;
  if tg_op in ('DELETE', 'UPDATE') then
    select line_orders || array_agg(l.order_id), line_books || array_agg(l.book_id), line_deltas || array_agg(l.count)
      into line_orders, line_books, line_deltas
      from old_lines l;
  end if;

  -- FOR SHARE: an order cannot be paid or cancelled (and restocked) while its lines change;
  -- the automation skips an order locked here and takes it on its next run.
  select (array_agg(o.order_id) filter (where o.state <> 0 and not (tg_op = 'DELETE' and o.state = 4)))[1],
         (array_agg(o.state) filter (where o.state <> 0 and not (tg_op = 'DELETE' and o.state = 4)))[1]
    into bad_order, bad_state
    from (select o.order_id, o.state from public.new_order o
           where o.order_id = any (line_orders)
           order by o.order_id
             for share) o;
  if bad_order is not null then
    raise exception using errcode = 'OA004',
      message = format('order %s is in state %s: its lines can change only while it is unpaid (state 0)',
                       bad_order, bad_state);
  end if;

  select array_agg(x.store_id), array_agg(x.book_id), array_agg(x.delta), array_agg(x.order_id)
    into stores, books, deltas, orders
    from (select o.store_id, l.book_id, sum(l.delta)::integer as delta, min(l.order_id) as order_id
            from unnest(line_orders, line_books, line_deltas) as l(order_id, book_id, delta)
            join public.new_order o on o.order_id = l.order_id
           where o.state = 0     -- lines of cancelled orders hold no stock
           group by o.store_id, l.book_id
          having sum(l.delta) <> 0) x;
  if stores is not null then
    perform order_automation.move_stock(stores, books, deltas, orders);
  end if;
  return null;
end $$;

create or replace trigger _100_reserve after insert on public.new_order_detail
referencing new table as new_lines
for each statement execute function order_automation.tg_new_order_detail__reserve();

create or replace trigger _100_reserve_update after update on public.new_order_detail
referencing old table as old_lines new table as new_lines
for each statement execute function order_automation.tg_new_order_detail__reserve();

create or replace trigger _100_release after delete on public.new_order_detail
referencing old table as old_lines
for each statement execute function order_automation.tg_new_order_detail__reserve();

-- >>> 200_order_actions.sql
-- Typed entry points of the lifecycle for apps: place, pay, ship, confirm receipt, cancel.
-- They add no rule of their own (the triggers enforce the lifecycle); they name the cause and the order.

create or replace function order_automation.set_order_state(order_id text, to_state smallint, cause text)
returns public.new_order
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  changed public.new_order;
begin
  perform set_config('order_automation.cause', set_order_state.cause, true);
  -- "is distinct from": asking for the state an order is already in is refused below, not a no-op,
  -- so that e.g. a buyer's confirm racing the auto-confirm learns it lost.
  update public.new_order o set state = set_order_state.to_state
   where o.order_id = set_order_state.order_id and o.state is distinct from set_order_state.to_state
  returning o.* into changed;
  perform set_config('order_automation.cause', '', true);
  if changed.order_id is null then
    if exists (select from public.new_order o where o.order_id = set_order_state.order_id) then
      raise exception using errcode = 'OA001',
        message = format('order %s is already in state %s', set_order_state.order_id, set_order_state.to_state);
    end if;
    raise exception using errcode = 'OA005', message = format('order %s does not exist', set_order_state.order_id);
  end if;
  return changed;
end $$;
comment on function order_automation.set_order_state(text, smallint, text) is
  'Moves one order to to_state, recording cause in order_event; the lifecycle triggers decide whether it may';

create or replace function order_automation.place_order(order_id text, user_id text, store_id text, items jsonb)
returns public.new_order
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  placed public.new_order;
begin
  if jsonb_typeof(place_order.items) is distinct from 'array' or jsonb_array_length(place_order.items) = 0 then
    raise exception using errcode = 'OA006',
      message = format('order %s: items must be a non-empty JSON array of {"book_id", "count", "price"}', place_order.order_id);
  end if;
  perform set_config('order_automation.cause', 'place_order', true);
  insert into public.new_order (order_id, user_id, store_id)
  values (place_order.order_id, place_order.user_id, place_order.store_id)
  returning * into placed;
  insert into public.new_order_detail (order_id, book_id, count, price)
  select place_order.order_id, i.book_id, i.count, i.price
    from jsonb_to_recordset(place_order.items) as i(book_id text, count integer, price bigint);
  perform set_config('order_automation.cause', '', true);
  return placed;
end $$;
comment on function order_automation.place_order(text, text, text, jsonb) is
  'Places an unpaid order with its lines ([{"book_id","count","price"}]) and reserves the books; OA002 when stock is short';

create or replace function order_automation.pay_order(order_id text) returns public.new_order
language sql
set search_path = pg_catalog, pg_temp
as $$ select order_automation.set_order_state(pay_order.order_id, 1::smallint, 'pay_order') $$;
comment on function order_automation.pay_order(text) is
  'Pays an unpaid order from the buyer''s balance; OA003 when the balance is short, OA001 when not unpaid';

create or replace function order_automation.ship_order(order_id text) returns public.new_order
language sql
set search_path = pg_catalog, pg_temp
as $$ select order_automation.set_order_state(ship_order.order_id, 2::smallint, 'ship_order') $$;
comment on function order_automation.ship_order(text) is
  'Marks a paid order shipped and starts its receipt deadline; OA001 when not paid';

create or replace function order_automation.confirm_receipt(order_id text) returns public.new_order
language sql
set search_path = pg_catalog, pg_temp
as $$ select order_automation.set_order_state(confirm_receipt.order_id, 3::smallint, 'confirm_receipt') $$;
comment on function order_automation.confirm_receipt(text) is
  'The buyer confirms receipt of a shipped order; the seller is paid. OA001 when not shipped';

create or replace function order_automation.cancel_order(order_id text) returns public.new_order
language sql
set search_path = pg_catalog, pg_temp
as $$ select order_automation.set_order_state(cancel_order.order_id, 4::smallint, 'cancel_order') $$;
comment on function order_automation.cancel_order(text) is
  'Cancels an unpaid or paid order: books back on the shelf, a paid order refunded. OA001 otherwise';

-- >>> 300_due_orders.sql
-- The two automations (SPEC §4): cancel unpaid orders past pay_deadline, confirm shipped orders past
-- receipt_deadline. Batches of batch_size, a COMMIT after each, skipping rows others are changing.

create or replace function order_automation.process_due_batch(
  job text, as_of timestamptz, batch_size integer, run_id bigint, skip_ids text[],
  out processed bigint, out failed text[]
)
language plpgsql
set search_path = pg_catalog, pg_temp
-- A stuck lock ends the batch (and the run) instead of hanging the schedule; the next run retries.
set lock_timeout = '5s'
as $$
declare
  ids text[];
  one text;
  n bigint;
  err_state text;
  err_message text;
begin
  processed := 0;
  failed := '{}'::text[];
  perform set_config('order_automation.cause',
    case process_due_batch.job when 'cancel_expired_orders' then 'payment_timeout' else 'receipt_timeout' end, true);

  -- The whole batch in one set-based statement: the lifecycle triggers book it in one pass.
  begin
    if process_due_batch.job = 'cancel_expired_orders' then
      with due as (
        select o.order_id from public.new_order o
         where o.state = 0 and o.pay_deadline <= process_due_batch.as_of
           and o.order_id <> all (process_due_batch.skip_ids)
         order by o.pay_deadline
         limit process_due_batch.batch_size
           for no key update skip locked)
      update public.new_order o set state = 4, cancelled_at = now()
        from due where o.order_id = due.order_id;
    else
      with due as (
        select o.order_id from public.new_order o
         where o.state = 2 and o.receipt_deadline <= process_due_batch.as_of
           and o.order_id <> all (process_due_batch.skip_ids)
         order by o.receipt_deadline
         limit process_due_batch.batch_size
           for no key update skip locked)
      update public.new_order o set state = 3, received_at = now()
        from due where o.order_id = due.order_id;
    end if;
    get diagnostics processed = row_count;
    return;
  exception
    when lock_not_available or deadlock_detected then raise;
    when others then null;  -- some order of the batch is bad: find it below
  end;

  -- One order broke the batch (an app's own trigger raising for it, say): take the batch again
  -- order by order, so only the bad ones are skipped and recorded, and every other one is processed.
  if process_due_batch.job = 'cancel_expired_orders' then
    select array_agg(d.order_id) into ids
      from (select o.order_id from public.new_order o
             where o.state = 0 and o.pay_deadline <= process_due_batch.as_of
               and o.order_id <> all (process_due_batch.skip_ids)
             order by o.pay_deadline
             limit process_due_batch.batch_size
               for no key update skip locked) d;
  else
    select array_agg(d.order_id) into ids
      from (select o.order_id from public.new_order o
             where o.state = 2 and o.receipt_deadline <= process_due_batch.as_of
               and o.order_id <> all (process_due_batch.skip_ids)
             order by o.receipt_deadline
             limit process_due_batch.batch_size
               for no key update skip locked) d;
  end if;

  foreach one in array coalesce(ids, '{}'::text[]) loop
    begin
      if process_due_batch.job = 'cancel_expired_orders' then
        update public.new_order o set state = 4, cancelled_at = now() where o.order_id = one and o.state = 0;
      else
        update public.new_order o set state = 3, received_at = now() where o.order_id = one and o.state = 2;
      end if;
      get diagnostics n = row_count;
      processed := processed + n;
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

-- The driver commits after every batch, and a procedure with a SET clause cannot COMMIT: so it has
-- none, and every name in it is schema-qualified. The batch function it calls pins search_path.
create or replace procedure order_automation.run_due_orders(
  job text, as_of timestamptz, batch_size integer, inout processed bigint
)
language plpgsql
as $$
declare
  run_id bigint;
  run_as_of timestamptz := coalesce(run_due_orders.as_of, pg_catalog.now());
  run_batch_size integer;
  budget interval;
  started timestamptz := pg_catalog.clock_timestamp();
  skip_ids text[] := '{}'::text[];
  batch record;
  failed_count bigint := 0;
  err_state text;
  err_message text;
begin
  if run_due_orders.job is null or run_due_orders.job not in ('cancel_expired_orders', 'confirm_shipped_orders') then
    raise exception using errcode = 'OA006', message = pg_catalog.format('unknown job %L', run_due_orders.job);
  end if;
  if run_due_orders.batch_size is not null and run_due_orders.batch_size not between 1 and 1000000 then
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

  processed := 0;
  loop
    begin
      select b.processed, b.failed into batch
        from order_automation.process_due_batch(run_due_orders.job, run_as_of, run_batch_size, run_id, skip_ids) b;
    exception when others then
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
    end;
    exit when err_state is not null;
    processed := processed + batch.processed;
    failed_count := failed_count + pg_catalog.cardinality(batch.failed);
    skip_ids := skip_ids operator(pg_catalog.||) batch.failed;
    update order_automation.run r
       set processed = run_due_orders.processed, failed = failed_count
     where r.id = run_id;
    commit;
    -- A short batch means nothing else is due (or it is locked by another run, which will do it).
    exit when batch.processed + pg_catalog.cardinality(batch.failed) < run_batch_size;
    exit when pg_catalog.clock_timestamp() - started >= budget;
  end loop;

  update order_automation.run r
     set finished_at = pg_catalog.clock_timestamp(), processed = run_due_orders.processed,
         failed = failed_count,
         error = case when err_state is not null then pg_catalog.format('%s (SQLSTATE %s)', err_message, err_state) end
   where r.id = run_id;
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
begin
  call order_automation.run_due_orders('cancel_expired_orders', cancel_expired_orders.as_of,
                                       cancel_expired_orders.batch_size, cancelled);
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

-- >>> 400_schedule.sql
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
    execute format('select %s.schedule($1, $2, $3)', order_automation.cron_schema())
      using order_automation.cron_jobname(j.job), j.schedule, j.command;
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

create or replace function order_automation.set_schedule(job text, schedule text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  cron_db text;
begin
  update order_automation.job j set schedule = set_schedule.schedule
   where j.job = set_schedule.job
  returning j.cron_database into cron_db;
  if not found then
    raise exception using errcode = 'OA006',
      message = format('unknown job %L: the jobs are cancel_expired_orders and confirm_shipped_orders', set_schedule.job);
  end if;
  if cron_db = current_database() then
    execute format('select %s.schedule($1, $2, $3)', order_automation.cron_schema())
      using order_automation.cron_jobname(set_schedule.job), set_schedule.schedule,
            (select j.command from order_automation.job j where j.job = set_schedule.job);
  end if;
end $$;
comment on function order_automation.set_schedule(text, text) is
  'Changes the cron schedule of a job (e.g. ''*/5 * * * *''); pg_cron refuses an invalid one';

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

-- >>> 500_status.sql
-- What getStatus and the CLI show: per job, its last run, what is due now and the next deadline.
-- The schedule itself is read from pg_cron by the caller, which may have to ask another database.

create or replace function order_automation.job_status(at timestamptz default now())
returns table (
  job text, schedule text, cron_database text, cron_jobname text,
  last_run_id bigint, last_started_at timestamptz, last_finished_at timestamptz,
  last_processed bigint, last_failed bigint, last_error text,
  due_now bigint, next_deadline timestamptz
)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select j.job, j.schedule, j.cron_database, order_automation.cron_jobname(j.job),
         r.id, r.started_at, r.finished_at, r.processed, r.failed, r.error,
         case j.job
           when 'cancel_expired_orders' then
             (select count(*) from public.new_order o where o.state = 0 and o.pay_deadline <= job_status.at)
           else (select count(*) from public.new_order o where o.state = 2 and o.receipt_deadline <= job_status.at)
         end,
         case j.job
           when 'cancel_expired_orders' then
             (select min(o.pay_deadline) from public.new_order o where o.state = 0 and o.pay_deadline > job_status.at)
           else (select min(o.receipt_deadline) from public.new_order o where o.state = 2 and o.receipt_deadline > job_status.at)
         end
    from order_automation.job j
    left join lateral (select * from order_automation.run r where r.job = j.job order by r.id desc limit 1) r on true
   order by j.job
$$;
comment on function order_automation.job_status(timestamptz) is
  'Per job: schedule, last run (start, end, orders processed, failures, error), orders due at `at`, and the next deadline after it';
