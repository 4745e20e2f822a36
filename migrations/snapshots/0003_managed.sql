-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0003_managed.ts. Never edit.

-- >>> 100_order_lifecycle.sql
-- The order lifecycle on new_order: a guard that refuses illegal state changes and the
-- set-based bookkeeping of each change (money, stock, history), the same for every writer.
-- Trigger names carry a number because PostgreSQL fires the triggers of one event in name order:
-- _050_ before _100_ before _900_ (guards first, bookkeeping and history last).

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
  -- Messages name a state as the TypeScript API does, with the code a plain UPDATE writes: 'paid (1)'.
  if new.state <> 0 then
    raise exception using errcode = 'OA001',
      message = format('order %s must be placed unpaid (0), not %s', new.order_id,
                       coalesce((array['unpaid','paid','shipped','received','cancelled'])[new.state + 1], 'state') || ' (' || new.state || ')');
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
      message = format('order %s cannot change from %s to %s', bad_order,
                       coalesce((array['unpaid','paid','shipped','received','cancelled'])[bad_from + 1], 'state') || ' (' || bad_from || ')',
                       coalesce((array['unpaid','paid','shipped','received','cancelled'])[bad_to + 1], 'state') || ' (' || bad_to || ')'),
      hint = 'Allowed: unpaid (0) -> paid (1) -> shipped (2) -> received (3); unpaid or paid -> cancelled (4).';
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
      message = format('order %s cannot be deleted while %s', bad.order_id,
                       coalesce((array['unpaid','paid','shipped','received','cancelled'])[bad.state + 1], 'state') || ' (' || bad.state || ')'),
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
        message = format('order %s is already %s', set_order_state.order_id,
                         coalesce((array['unpaid','paid','shipped','received','cancelled'])[set_order_state.to_state + 1], 'state') || ' (' || set_order_state.to_state || ')');
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
-- What shops ask for beyond the two rules: a payment in flight is not cancelled under the
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
      message = format('order %s is %s: a payment can start only while it is unpaid (0)', o.order_id,
                       coalesce((array['unpaid','paid','shipped','received','cancelled'])[o.state + 1], 'state') || ' (' || o.state || ')');
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
      message = format('order %s is %s: its receipt deadline can be extended only while shipped (2)', o.order_id,
                       coalesce((array['unpaid','paid','shipped','received','cancelled'])[o.state + 1], 'state') || ' (' || o.state || ')');
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
    raise exception using errcode = 'OA001', message = format('order %s is %s, a final state: it cannot be held', o.order_id,
                                                              coalesce((array['unpaid','paid','shipped','received','cancelled'])[o.state + 1], 'state') || ' (' || o.state || ')');
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
