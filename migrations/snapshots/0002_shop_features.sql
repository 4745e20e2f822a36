-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0002_shop_features.ts. Never edit.

-- >>> 060_settings_guard.sql
-- The settings table keeps its one row: a DELETE or TRUNCATE would leave new orders without a deadline
-- and every run failing, so both are refused (the row's values are changed with UPDATE).

create or replace function order_automation.tg_settings__keep_one_row() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- Without its row every new order would get no deadline, and every run would fail.
  raise exception using errcode = 'OA006',
    message = 'order_automation.settings has exactly one row: change its values, never delete it',
    hint = 'UPDATE order_automation.settings SET <setting> = <value>, or: order-automation settings set <name>=<value>';
end $$;
comment on function order_automation.tg_settings__keep_one_row() is
  'Refuses DELETE and TRUNCATE of the one settings row';

create or replace trigger _100_keep_one_row before delete or truncate on order_automation.settings
for each statement execute function order_automation.tg_settings__keep_one_row();

-- >>> 090_stock.sql
-- Moving books on and off the shelf (store.stock_level), set-based, for every writer of orders:
-- placing lines reserves, cancelling restores. Never leaves stock negative, never deadlocks.

create or replace function order_automation.move_stock(
  store_ids text[], book_ids text[], deltas integer[], order_ids text[]
) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
-- A batch moves a few thousand rows of a store table of any size: probe its primary key for each
-- rather than hash the whole table, which the planner prefers from a few thousand keys on.
set enable_hashjoin = off
set enable_mergejoin = off
as $$
declare
  locked bigint;
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
  get diagnostics locked = row_count;

  -- Only taking books off the shelf, or a book the store does not stock, can fail: putting books
  -- back (a cancellation) skips the check. The rows are locked: they cannot change before the update.
  if locked < cardinality(move_stock.store_ids) or 0 > any (move_stock.deltas) then
    select m.order_id, m.store_id, m.book_id, -m.delta as wanted, s.stock_level
      into short
      from unnest(move_stock.store_ids, move_stock.book_ids, move_stock.deltas, move_stock.order_ids)
           as m(store_id, book_id, delta, order_id)
      left join public.store s on s.store_id = m.store_id and s.book_id = m.book_id
     where s.stock_level is null or s.stock_level + m.delta < 0
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
  end if;

  update public.store s set stock_level = s.stock_level + m.delta
    from unnest(move_stock.store_ids, move_stock.book_ids, move_stock.deltas) as m(store_id, book_id, delta)
   where s.store_id = m.store_id and s.book_id = m.book_id;
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

-- >>> 110_order_detail.sql
-- The lines of an order (new_order_detail): adding, changing or removing lines of an unpaid order
-- reserves or returns its books; the lines of any other order are frozen (cancelled ones may be purged).

create or replace function order_automation.tg_new_order_detail__reserve() returns trigger
language plpgsql
security definer
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

-- >>> 210_order_holds.sql
-- What shops ask for beyond the two rules (SPEC §8): a payment in flight is not cancelled under the
-- buyer, the buyer may push the receipt deadline once, and a disputed order can be held. The four
-- entry points run as the package's owner, so an app role needs only EXECUTE on them.

create or replace function order_automation.note_event(order_id text, state smallint, cause text, note text)
returns void
language sql
set search_path = pg_catalog, pg_temp
as $$
  insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
  values (note_event.order_id, note_event.state, note_event.state, note_event.cause, note_event.note);
  select pg_notify('order_automation', 'order_event');
$$;
comment on function order_automation.note_event(text, smallint, text, text) is
  'Records an event that is not a state change (from_state = to_state) in order_event';

-- Locks one order for a change that is not a state change, or says why it cannot be had.
create or replace function order_automation.lock_order(order_id text) returns public.new_order
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  found_order public.new_order;
begin
  select o.* into found_order from public.new_order o where o.order_id = lock_order.order_id for no key update;
  if not found then
    raise exception using errcode = 'OA005', message = format('order %s does not exist', lock_order.order_id);
  end if;
  return found_order;
end $$;
comment on function order_automation.lock_order(text) is
  'Locks an order row (waiting for a run that holds it) and returns it; OA005 when it does not exist';

create or replace function order_automation.payment_started(order_id text, grace interval default null)
returns public.new_order
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
as $$
declare
  o public.new_order := order_automation.lock_order(payment_started.order_id);
  safe_until timestamptz := now() + coalesce(payment_started.grace, (select s.payment_grace from order_automation.settings s));
begin
  if payment_started.grace <= interval '0' then
    raise exception using errcode = 'OA006', message = format('order %s: grace must be a positive interval, not %s', o.order_id, payment_started.grace);
  end if;
  -- Locked above: if the canceller got there first the order is cancelled now, and the app learns
  -- that the payment must not be taken.
  if o.state <> 0 then
    raise exception using errcode = 'OA001',
      message = format('order %s is in state %s: a payment can start only while it is unpaid (0)', o.order_id, o.state);
  end if;
  update public.new_order n set pay_deadline = greatest(n.pay_deadline, safe_until)
   where n.order_id = o.order_id
  returning n.* into o;
  perform order_automation.note_event(o.order_id, 0::smallint, 'payment_started', format('not cancelled before %s', safe_until));
  return o;
end $$;
comment on function order_automation.payment_started(text, interval) is
  'Called when a payment attempt begins: the order is not auto-cancelled before now() + grace (default: payment_grace). OA001 unless unpaid';

create or replace function order_automation.extend_receipt(order_id text, by interval default null)
returns public.new_order
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
as $$
declare
  o public.new_order := order_automation.lock_order(extend_receipt.order_id);
  extension interval := coalesce(extend_receipt.by, (select s.receipt_extension from order_automation.settings s));
begin
  if extension <= interval '0' then
    raise exception using errcode = 'OA006', message = format('order %s: by must be a positive interval, not %s', o.order_id, extension);
  end if;
  if o.state <> 2 then
    raise exception using errcode = 'OA001',
      message = format('order %s is in state %s: its receipt deadline can be extended only while shipped (2)', o.order_id, o.state);
  end if;
  if o.receipt_extended_at is not null then
    raise exception using errcode = 'OA007',
      message = format('order %s: its receipt deadline was already extended at %s', o.order_id, o.receipt_extended_at);
  end if;
  update public.new_order n set receipt_deadline = n.receipt_deadline + extension, receipt_extended_at = now()
   where n.order_id = o.order_id
  returning n.* into o;
  perform order_automation.note_event(o.order_id, 2::smallint, 'receipt_extended', format('receipt deadline now %s', o.receipt_deadline));
  return o;
end $$;
comment on function order_automation.extend_receipt(text, interval) is
  'The buyer pushes the receipt deadline once, by `by` (default: receipt_extension). OA001 unless shipped, OA007 the second time';

create or replace function order_automation.hold(order_id text, reason text) returns public.new_order
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  o public.new_order := order_automation.lock_order(hold.order_id);
begin
  if coalesce(btrim(hold.reason), '') = '' then
    raise exception using errcode = 'OA006', message = format('order %s: a hold needs a reason', o.order_id);
  end if;
  if o.state in (3, 4) then
    raise exception using errcode = 'OA001', message = format('order %s is in final state %s: it cannot be held', o.order_id, o.state);
  end if;
  if o.held_at is not null then
    raise exception using errcode = 'OA008', message = format('order %s is already held since %s (%s)', o.order_id, o.held_at, o.hold_reason);
  end if;
  update public.new_order n set held_at = now(), hold_reason = hold.reason
   where n.order_id = o.order_id
  returning n.* into o;
  perform order_automation.note_event(o.order_id, o.state, 'hold', hold.reason);
  return o;
end $$;
comment on function order_automation.hold(text, text) is
  'Holds an order (dispute, refund request, review): neither auto-cancelled nor auto-confirmed until released; its countdown pauses. OA008 when already held';

create or replace function order_automation.release(order_id text) returns public.new_order
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
as $$
declare
  o public.new_order := order_automation.lock_order(release.order_id);
begin
  if o.held_at is null then
    raise exception using errcode = 'OA008', message = format('order %s is not held', o.order_id);
  end if;
  -- The countdown resumes with the time that was left: the deadline moves by how long it was paused
  -- (since the hold, or since the countdown began if that was later, e.g. shipped while held).
  update public.new_order n
     set pay_deadline = case when n.state = 0 then n.pay_deadline + (now() - greatest(n.held_at, n.created_at)) else n.pay_deadline end,
         receipt_deadline = case when n.state = 2 then n.receipt_deadline + (now() - greatest(n.held_at, n.shipped_at)) else n.receipt_deadline end,
         held_at = null, hold_reason = null
   where n.order_id = o.order_id
  returning n.* into o;
  perform order_automation.note_event(o.order_id, o.state, 'release', null);
  return o;
end $$;
comment on function order_automation.release(text) is
  'Releases a held order: its deadline moves by the time it was held, so the countdown resumes with the time that was left. OA008 when not held';

-- >>> 300_due_orders.sql
-- The two automations (SPEC §4): cancel unpaid orders past pay_deadline, confirm shipped orders past
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
set search_path = pg_catalog, pg_temp
as $$
declare
  n bigint;
begin
  -- Set-based: the lifecycle triggers book the whole set in one pass.
  case process_orders.job
    when 'cancel_expired_orders' then
      perform set_config('order_automation.cause', 'payment_timeout', true);
      update public.new_order o set state = 4, cancelled_at = now() where o.order_id = any (process_orders.ids);
    when 'confirm_shipped_orders' then
      perform set_config('order_automation.cause', 'receipt_timeout', true);
      update public.new_order o set state = 3, received_at = now() where o.order_id = any (process_orders.ids);
    when 'purge_cancelled_orders' then
      perform set_config('order_automation.cause', 'purge_cancelled_orders', true);
      delete from public.new_order_detail d where d.order_id = any (process_orders.ids);
      delete from public.new_order o where o.order_id = any (process_orders.ids);
  end case;
  get diagnostics n = row_count;
  perform set_config('order_automation.cause', '', true);
  return n;
end $$;
comment on function order_automation.process_orders(text, text[]) is
  'Applies a job to orders due_orders() locked: cancel, confirm, or delete; returns how many';

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
  begin
    perform order_automation.remind_due_soon(run_due_orders.job, run_as_of);
  exception when others or query_canceled then
    get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
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

-- >>> 310_purge_history.sql
-- Bounded history: the package's run log, and pg_cron's run details of the package's jobs, are kept
-- history_retention long. order_event, the order history, is never purged here.

create or replace procedure order_automation.purge_history(inout purged bigint default null)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  keep interval := (select s.history_retention from order_automation.settings s);
  details bigint := 0;
begin
  delete from order_automation.run r where r.started_at < now() - keep and r.finished_at is not null;
  get diagnostics purged = row_count;
  -- pg_cron's log of our jobs, when pg_cron lives in this database (it never purges it itself).
  if order_automation.cron_schema() is not null then
    execute format('delete from %1$s.job_run_details d using %1$s.job j
                     where j.jobid = d.jobid and j.jobname = any ($1) and d.end_time < now() - $2', order_automation.cron_schema())
      using (select array_agg(order_automation.cron_jobname(j.job)) from order_automation.job j), keep;
    get diagnostics details = row_count;
  end if;
  purged := purged + details;
  insert into order_automation.run (job, as_of, batch_size, finished_at, processed)
  values ('purge_history', now(), 0, clock_timestamp(), purged);
end $$;
comment on procedure order_automation.purge_history(bigint) is
  'Deletes runs (with their failures) and pg_cron run details of the package''s jobs older than history_retention; returns how many rows';

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

-- >>> 500_status.sql
-- What getStatus and the CLI show: per job, its last run, what is due now, what is held, and the next
-- deadline. Whether pg_cron has the job active is read from pg_cron by the caller (it may live elsewhere).

create or replace function order_automation.job_status(at timestamptz default now())
returns table (
  job text, schedule text, active boolean, cron_database text, cron_jobname text,
  last_run_id bigint, last_started_at timestamptz, last_finished_at timestamptz,
  last_processed bigint, last_failed bigint, last_error text,
  due_now bigint, held bigint, next_deadline timestamptz
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
         end
    from order_automation.job j
    left join lateral (select * from order_automation.run r where r.job = j.job order by r.id desc limit 1) r on true
   order by j.job
$$;
comment on function order_automation.job_status(timestamptz) is
  'Per job: schedule, active, last run (start, end, orders processed, failures, error), orders due at `at`, orders held, and the next deadline after it';

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
