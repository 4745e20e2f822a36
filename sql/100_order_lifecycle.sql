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
