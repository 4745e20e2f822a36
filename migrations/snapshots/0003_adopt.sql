-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0003_adopt.ts. Never edit.

-- >>> 070_state_codes.sql
-- The codes of new_order.state live in the settings (an adopted app may use -1 for cancelled): the
-- partial indexes the automation probes are rebuilt when a code changes, in the same transaction.

create or replace function order_automation.index_state_codes() returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  s order_automation.settings;
begin
  select * into s from order_automation.settings;
  -- The predicates must hold the codes as constants: only then can a query that names the code
  -- (planned with its value, see plan_cache_mode in due_orders) use the index. Dropped and created
  -- in one transaction: a concurrent tick waits for the new index rather than scanning the table.
  drop index if exists public.new_order_pay_deadline_due, public.new_order_receipt_deadline_due,
    public.new_order_cancelled_at;
  execute format('create index new_order_pay_deadline_due on public.new_order (pay_deadline) where state = %s and held_at is null',
                 s.state_unpaid);
  execute format('create index new_order_receipt_deadline_due on public.new_order (receipt_deadline) where state = %s and held_at is null',
                 s.state_shipped);
  execute format('create index new_order_cancelled_at on public.new_order (cancelled_at) where state = %s',
                 s.state_cancelled);
end $$;
comment on function order_automation.index_state_codes() is
  'Rebuilds the partial indexes of new_order the automation probes (unpaid and shipped orders by deadline, cancelled ones by time) for the state codes in settings';

create or replace function order_automation.tg_settings__state_codes() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform order_automation.index_state_codes();
  return null;
end $$;
comment on function order_automation.tg_settings__state_codes() is
  'Rebuilds the indexes that hold state codes when a code in settings changes';

create or replace trigger _200_state_codes after update on order_automation.settings
for each row when ((old.state_unpaid, old.state_shipped, old.state_cancelled)
                   is distinct from (new.state_unpaid, new.state_shipped, new.state_cancelled))
execute function order_automation.tg_settings__state_codes();

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

create or replace function order_automation.restock(order_ids text[]) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  stores text[]; books text[]; counts integer[]; orders text[];
begin
  -- Summed per store and book, so move_stock locks each shelf once, in its sorted order.
  select array_agg(r.store_id), array_agg(r.book_id), array_agg(r.n), array_agg(r.order_id)
    into stores, books, counts, orders
    from (select o.store_id, d.book_id, sum(d.count)::integer as n, min(o.order_id) as order_id
            from public.new_order o
            -- One primary-key probe per order, whatever the statistics of the lines say (after a
            -- purge they may say "empty": driven from them, this turns quadratic).
            cross join lateral (select d.book_id, d.count from public.new_order_detail d
                                 where d.order_id = o.order_id offset 0) d
           where o.order_id = any (restock.order_ids)
           group by o.store_id, d.book_id) r;
  if stores is not null then
    perform order_automation.move_stock(stores, books, counts, orders);
  end if;
end $$;
comment on function order_automation.restock(text[]) is
  'Puts the books of the lines of the given orders back on their store''s shelf (a cancellation)';

-- >>> 095_money.sql
-- Moving money between balances ("user".balance), set-based, for every booking of the package: a
-- payment debits the buyer, a refund credits them, a receipt credits the seller (the store's owner).

create or replace function order_automation.move_money(user_ids text[], deltas bigint[], order_ids text[])
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  short record;
begin
  -- Lock balances in user_id order so concurrent writers never deadlock on them.
  perform 1 from public."user" u where u.user_id = any (move_money.user_ids) order by u.user_id for no key update;
  -- A credit always lands; a debit only on a balance that covers it. Any entry left over (a short
  -- balance, a user that does not exist) fails the whole statement: money is never created or lost.
  with m as (select * from unnest(move_money.user_ids, move_money.deltas, move_money.order_ids) as m(user_id, delta, order_id)),
       moved as (
         update public."user" u set balance = u.balance + m.delta
           from m
          where u.user_id = m.user_id and (m.delta >= 0 or u.balance + m.delta >= 0)
         returning u.user_id)
  select m.user_id, m.delta, m.order_id, exists (select from public."user" u where u.user_id = m.user_id) as known
    into short
    from m
   where not exists (select from moved where moved.user_id = m.user_id)
   limit 1;
  if found then
    if short.delta >= 0 then
      raise exception using errcode = 'OA009',
        message = format('order %s: user %s, to be credited %s, does not exist', short.order_id, short.user_id, short.delta);
    end if;
    if not short.known then
      raise exception using errcode = 'OA003',
        message = format('order %s: buyer %s does not exist', short.order_id, short.user_id);
    end if;
    raise exception using errcode = 'OA003',
      message = format('order %s: buyer %s has not enough balance to pay for it', short.order_id, short.user_id);
  end if;
end $$;
comment on function order_automation.move_money(text[], bigint[], text[]) is
  'Adds deltas[i] to the balance of user_ids[i]; one entry per user. Raises OA003 naming order_ids[i] when a debit exceeds the balance, OA009 when a user to credit does not exist.';

create or replace function order_automation.seller_credits(order_ids text[])
returns table (user_id text, total bigint, order_id text)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  bad record;
begin
  -- The seller is the owner of the order's store in user_store. An app's own user_store may be keyed
  -- by (user_id, store_id), so a store may have no owner there, or several: paying none or one of
  -- them at random would lose or misplace money, so the order fails instead (and is retried).
  select o.order_id, o.store_id, count(us.user_id) as owners
    into bad
    from public.new_order o
    left join public.user_store us on us.store_id = o.store_id
   where o.order_id = any (seller_credits.order_ids)
   group by o.order_id, o.store_id
  having count(us.user_id) <> 1
   limit 1;
  if found then
    raise exception using errcode = 'OA009',
      message = format('order %s: store %s has %s owners in user_store, and its seller must be exactly one',
                       bad.order_id, bad.store_id, bad.owners);
  end if;
  return query
    select us.user_id, sum(d.count::bigint * d.price)::bigint, min(o.order_id)
      from public.new_order o
      join public.user_store us on us.store_id = o.store_id
      -- One primary-key probe per order (see restock).
      cross join lateral (select d.count, d.price from public.new_order_detail d
                           where d.order_id = o.order_id offset 0) d
     where o.order_id = any (seller_credits.order_ids)
     group by us.user_id;
end $$;
comment on function order_automation.seller_credits(text[]) is
  'What the given orders pay their sellers: per store owner, the sum of count * price of the lines, and one of the orders; OA009 when a store has no owner or several';

-- >>> 100_order_lifecycle.sql
-- The order lifecycle on new_order: a guard that refuses illegal state changes and the
-- set-based bookkeeping of each change (money, stock, history), the same for every writer.
-- Trigger names carry a number because PostgreSQL fires the triggers of one event in name order:
-- _040_ before _050_ before _100_ before _900_ (guards first, bookkeeping and history last).
-- The state codes are the settings' (state_unpaid ...), and so is the bookkeeping: 'full' books and
-- guards every writer; 'automation' (an adopted app that books its own changes) records every change
-- but books only the package's own jobs, and keeps what they did.

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
declare
  s order_automation.settings;
begin
  select * into s from order_automation.settings;
  if s.bookkeeping = 'full' and new.state is distinct from s.state_unpaid then
    raise exception using errcode = 'OA001',
      message = format('order %s must be placed unpaid (state %s), not in state %s', new.order_id, s.state_unpaid, new.state);
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
      message = format('order %s was closed by the automation (%s at %s): its state stays %s',
                       old.order_id, by_job.cause, by_job.at, old.state),
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
      message = format('order %s cannot change from state %s to state %s', bad_order, bad_from, bad_to),
      hint = format('Allowed: %s unpaid -> %s paid -> %s shipped -> %s received; %s or %s -> %s cancelled.',
                    s.state_unpaid, s.state_paid, s.state_shipped, s.state_received, s.state_unpaid, s.state_paid,
                    s.state_cancelled);
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
  select * into s from order_automation.settings;
  -- Paid, shipped and received orders hold money: they are never deleted, only cancelled or kept
  -- (unless the app books its own changes).
  if s.bookkeeping = 'full' then
    select o.order_id, o.state into bad from old_orders o
     where o.state in (s.state_paid, s.state_shipped, s.state_received) limit 1;
    if found then
      raise exception using errcode = 'OA001',
        message = format('order %s cannot be deleted in state %s', bad.order_id, bad.state),
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

-- >>> 110_order_detail.sql
-- The lines of an order (new_order_detail): adding, changing or removing lines of an unpaid order
-- reserves or returns its books; the lines of any other order are frozen (cancelled ones may be purged).
-- With 'automation' bookkeeping the app reserves its own books: its lines are left to it.

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
  bad_state integer;
  stores text[]; books text[]; deltas integer[]; orders text[];
  s order_automation.settings;
begin
  select * into s from order_automation.settings;
  if s.bookkeeping = 'automation' then
    return null;
  end if;
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
  select (array_agg(o.order_id) filter (where o.state is distinct from s.state_unpaid
                                           and not (tg_op = 'DELETE' and o.state = s.state_cancelled)))[1],
         (array_agg(o.state) filter (where o.state is distinct from s.state_unpaid
                                       and not (tg_op = 'DELETE' and o.state = s.state_cancelled)))[1]
    into bad_order, bad_state
    from (select o.order_id, o.state from public.new_order o
           where o.order_id = any (line_orders)
           order by o.order_id
             for share) o;
  if bad_order is not null then
    raise exception using errcode = 'OA004',
      message = format('order %s is in state %s: its lines can change only while it is unpaid (state %s)',
                       bad_order, bad_state, s.state_unpaid);
  end if;

  select array_agg(x.store_id), array_agg(x.book_id), array_agg(x.delta), array_agg(x.order_id)
    into stores, books, deltas, orders
    from (select o.store_id, l.book_id, sum(l.delta)::integer as delta, min(l.order_id) as order_id
            from unnest(line_orders, line_books, line_deltas) as l(order_id, book_id, delta)
            join public.new_order o on o.order_id = l.order_id
           -- Lines of cancelled orders hold no stock; lines written before their order are reserved
           -- when the order is placed.
           where o.state = s.state_unpaid
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

-- >>> 120_job_outcomes.sql
-- What the package's own jobs book, whatever the bookkeeping setting: an auto-cancel puts the books
-- of the order's lines back on the shelf (an unpaid order holds no money), an auto-confirm pays the
-- store's owner. Kept in one function, apart from the lifecycle triggers, so that the procedures can
-- book a batch themselves (where tables refuse triggers) and the trigger then skips their statements.

create or replace function order_automation.book_job_outcomes(job text, order_ids text[]) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  sellers text[]; totals bigint[]; orders text[];
begin
  if book_job_outcomes.order_ids is null or cardinality(book_job_outcomes.order_ids) = 0 then
    return;
  end if;
  case book_job_outcomes.job
    when 'cancel_expired_orders' then
      perform order_automation.restock(book_job_outcomes.order_ids);
    when 'confirm_shipped_orders' then
      select array_agg(c.user_id order by c.user_id), array_agg(c.total order by c.user_id),
             array_agg(c.order_id order by c.user_id)
        into sellers, totals, orders
        from order_automation.seller_credits(book_job_outcomes.order_ids) c
       where c.total <> 0;
      if sellers is not null then
        perform order_automation.move_money(sellers, totals, orders);
      end if;
    else
      raise exception using errcode = 'OA006', message = format('no job %L books orders', book_job_outcomes.job);
  end case;
end $$;
comment on function order_automation.book_job_outcomes(text, text[]) is
  'Books, once, what a job did to the given orders: cancel_expired_orders restocks their lines, confirm_shipped_orders pays their sellers';

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
  -- The state is given: an adopted table's state column may have no default.
  insert into public.new_order (order_id, user_id, store_id, state)
  values (place_order.order_id, place_order.user_id, place_order.store_id,
          (select s.state_unpaid from order_automation.settings s))
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
as $$ select order_automation.set_order_state(pay_order.order_id, s.state_paid, 'pay_order')
     from order_automation.settings s $$;
comment on function order_automation.pay_order(text) is
  'Pays an unpaid order from the buyer''s balance; OA003 when the balance is short, OA001 when not unpaid';

create or replace function order_automation.ship_order(order_id text) returns public.new_order
language sql
set search_path = pg_catalog, pg_temp
as $$ select order_automation.set_order_state(ship_order.order_id, s.state_shipped, 'ship_order')
     from order_automation.settings s $$;
comment on function order_automation.ship_order(text) is
  'Marks a paid order shipped and starts its receipt deadline; OA001 when not paid';

create or replace function order_automation.confirm_receipt(order_id text) returns public.new_order
language sql
set search_path = pg_catalog, pg_temp
as $$ select order_automation.set_order_state(confirm_receipt.order_id, s.state_received, 'confirm_receipt')
     from order_automation.settings s $$;
comment on function order_automation.confirm_receipt(text) is
  'The buyer confirms receipt of a shipped order; the seller is paid. OA001 when not shipped';

create or replace function order_automation.cancel_order(order_id text) returns public.new_order
language sql
set search_path = pg_catalog, pg_temp
as $$ select order_automation.set_order_state(cancel_order.order_id, s.state_cancelled, 'cancel_order')
     from order_automation.settings s $$;
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
  s order_automation.settings := (select x from order_automation.settings x);
  safe_until timestamptz := now() + coalesce(payment_started.grace, s.payment_grace);
begin
  if payment_started.grace <= interval '0' then
    raise exception using errcode = 'OA006', message = format('order %s: grace must be a positive interval, not %s', o.order_id, payment_started.grace);
  end if;
  -- Locked above: if the canceller got there first the order is cancelled now, and the app learns
  -- that the payment must not be taken.
  if o.state is distinct from s.state_unpaid then
    raise exception using errcode = 'OA001',
      message = format('order %s is in state %s: a payment can start only while it is unpaid (%s)', o.order_id, o.state, s.state_unpaid);
  end if;
  update public.new_order n set pay_deadline = greatest(n.pay_deadline, safe_until)
   where n.order_id = o.order_id
  returning n.* into o;
  perform order_automation.note_event(o.order_id, s.state_unpaid, 'payment_started', format('not cancelled before %s', safe_until));
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
  s order_automation.settings := (select x from order_automation.settings x);
  extension interval := coalesce(extend_receipt.by, s.receipt_extension);
begin
  if extension <= interval '0' then
    raise exception using errcode = 'OA006', message = format('order %s: by must be a positive interval, not %s', o.order_id, extension);
  end if;
  if o.state is distinct from s.state_shipped then
    raise exception using errcode = 'OA001',
      message = format('order %s is in state %s: its receipt deadline can be extended only while shipped (%s)', o.order_id, o.state, s.state_shipped);
  end if;
  if o.receipt_extended_at is not null then
    raise exception using errcode = 'OA007',
      message = format('order %s: its receipt deadline was already extended at %s', o.order_id, o.receipt_extended_at);
  end if;
  update public.new_order n set receipt_deadline = n.receipt_deadline + extension, receipt_extended_at = now()
   where n.order_id = o.order_id
  returning n.* into o;
  perform order_automation.note_event(o.order_id, s.state_shipped, 'receipt_extended', format('receipt deadline now %s', o.receipt_deadline));
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
  s order_automation.settings := (select x from order_automation.settings x);
begin
  if coalesce(btrim(hold.reason), '') = '' then
    raise exception using errcode = 'OA006', message = format('order %s: a hold needs a reason', o.order_id);
  end if;
  if o.state in (s.state_received, s.state_cancelled) then
    raise exception using errcode = 'OA001', message = format('order %s is in final state %s: it cannot be held', o.order_id, o.state);
  end if;
  if o.held_at is not null then
    raise exception using errcode = 'OA008', message = format('order %s is already held since %s (%s)', o.order_id, o.held_at, o.hold_reason);
  end if;
  update public.new_order n set held_at = now(), hold_reason = hold.reason
   where n.order_id = o.order_id
  returning n.* into o;
  perform order_automation.note_event(o.order_id, o.state::smallint, 'hold', hold.reason);
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
  s order_automation.settings := (select x from order_automation.settings x);
begin
  if o.held_at is null then
    raise exception using errcode = 'OA008', message = format('order %s is not held', o.order_id);
  end if;
  -- The countdown resumes with the time that was left: the deadline moves by how long it was paused
  -- (since the hold, or since the countdown began if that was later, e.g. shipped while held).
  update public.new_order n
     set pay_deadline = case when n.state = s.state_unpaid then n.pay_deadline + (now() - greatest(n.held_at, n.created_at)) else n.pay_deadline end,
         receipt_deadline = case when n.state = s.state_shipped then n.receipt_deadline + (now() - greatest(n.held_at, n.shipped_at)) else n.receipt_deadline end,
         held_at = null, hold_reason = null
   where n.order_id = o.order_id
  returning n.* into o;
  perform order_automation.note_event(o.order_id, o.state::smallint, 'release', null);
  return o;
end $$;
comment on function order_automation.release(text) is
  'Releases a held order: its deadline moves by the time it was held, so the countdown resumes with the time that was left. OA008 when not held';

-- >>> 300_due_orders.sql
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

create or replace function order_automation.process_orders(job text, ids text[]) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  n bigint;
  s order_automation.settings := (select x from order_automation.settings x);
begin
  -- Set-based: the lifecycle triggers book the whole set in one pass.
  case process_orders.job
    when 'cancel_expired_orders' then
      perform set_config('order_automation.cause', 'payment_timeout', true);
      update public.new_order o set state = s.state_cancelled, cancelled_at = now() where o.order_id = any (process_orders.ids);
    when 'confirm_shipped_orders' then
      perform set_config('order_automation.cause', 'receipt_timeout', true);
      update public.new_order o set state = s.state_received, received_at = now() where o.order_id = any (process_orders.ids);
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
set plan_cache_mode = force_custom_plan
as $$
declare
  ahead interval := (select s.remind_before from order_automation.settings s);
  unpaid smallint := (select s.state_unpaid from order_automation.settings s);
  shipped smallint := (select s.state_shipped from order_automation.settings s);
  reminded bigint := 0;
begin
  if ahead is null or remind_due_soon.job not in ('cancel_expired_orders', 'confirm_shipped_orders') then
    return 0;
  end if;
  -- reminded_state marks the order in the same statement: a concurrent run re-checks it on the
  -- locked row and writes no second reminder.
  if remind_due_soon.job = 'cancel_expired_orders' then
    with soon as (
      update public.new_order o set reminded_state = unpaid
       where o.state = unpaid and o.held_at is null
         and o.pay_deadline > remind_due_soon.as_of and o.pay_deadline <= remind_due_soon.as_of + ahead
         and o.reminded_state is distinct from unpaid
      returning o.order_id, o.pay_deadline as deadline)
    insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
    select soon.order_id, unpaid, unpaid, 'payment_due_soon', format('pay deadline %s', soon.deadline) from soon;
  else
    with soon as (
      update public.new_order o set reminded_state = shipped
       where o.state = shipped and o.held_at is null
         and o.receipt_deadline > remind_due_soon.as_of and o.receipt_deadline <= remind_due_soon.as_of + ahead
         and o.reminded_state is distinct from shipped
      returning o.order_id, o.receipt_deadline as deadline)
    insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
    select soon.order_id, shipped, shipped, 'receipt_due_soon', format('receipt deadline %s', soon.deadline) from soon;
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
language plpgsql stable
set search_path = pg_catalog, pg_temp
-- Planned with the state codes' values, so that each count probes its partial index.
set plan_cache_mode = force_custom_plan
as $$
declare
  s order_automation.settings := (select x from order_automation.settings x);
begin
  return query
  select j.job, j.schedule, j.active, j.cron_database, order_automation.cron_jobname(j.job),
         r.id, r.started_at, r.finished_at, r.processed, r.failed, r.error,
         case j.job
           when 'cancel_expired_orders' then
             (select count(*) from public.new_order o
               where o.state = s.state_unpaid and o.held_at is null and o.pay_deadline <= job_status.at)
           when 'confirm_shipped_orders' then
             (select count(*) from public.new_order o
               where o.state = s.state_shipped and o.held_at is null and o.receipt_deadline <= job_status.at)
           when 'purge_cancelled_orders' then
             (select count(*) from public.new_order o
               where o.state = s.state_cancelled and o.cancelled_at <= job_status.at - s.purge_cancelled_after)
         end,
         case j.job
           when 'cancel_expired_orders' then
             (select count(*) from public.new_order o where o.state = s.state_unpaid and o.held_at is not null)
           when 'confirm_shipped_orders' then
             (select count(*) from public.new_order o where o.state = s.state_shipped and o.held_at is not null)
         end,
         case j.job
           when 'cancel_expired_orders' then
             (select min(o.pay_deadline) from public.new_order o
               where o.state = s.state_unpaid and o.held_at is null and o.pay_deadline > job_status.at)
           when 'confirm_shipped_orders' then
             (select min(o.receipt_deadline) from public.new_order o
               where o.state = s.state_shipped and o.held_at is null and o.receipt_deadline > job_status.at)
         end
    from order_automation.job j
    left join lateral (select * from order_automation.run r where r.job = j.job order by r.id desc limit 1) r on true
   order by j.job;
end $$;
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
