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
  line_stores text[];
  line_booked boolean[];
  stale text[];
  bad_order text;
  bad_state integer;
  stores text[]; books text[]; deltas integer[]; orders text[];
  s order_automation.settings;
  -- Orders a statement still open placed, moved or deleted, with their store and their state before
  -- it (their trigger ran first: see 097_one_statement.sql); and whether to write down these lines.
  journal jsonb := '[]'::jsonb;
  writing boolean;
begin
  select * into s from order_automation.settings;
  if s.bookkeeping = 'automation' then
    perform order_automation.close_statement('new_order_detail');
    return null;
  end if;
  if coalesce(current_setting('order_automation.changed_orders', true), '') <> '' then
    journal := order_automation.statement_journal('changed_orders');
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

  -- An order cannot be paid or cancelled (and restocked) while its lines change: the automation
  -- skips an order locked here and takes it on its next run. Locked in order_id order, so that
  -- writers of lines queue instead of deadlocking. Lines can change only while the order is unpaid
  -- (those of a cancelled one may be deleted): as it is now, and, when a statement still open moved
  -- it, as it was before.
  select array_agg(o.order_id) filter (where o.state = s.state_unpaid
                                          and o.xmin::text <> (pg_current_xact_id()::text::bigint % 4294967296)::text),
         (array_agg(o.order_id) filter (where o.state is distinct from s.state_unpaid
                                           and not (tg_op = 'DELETE' and o.state = s.state_cancelled)))[1],
         (array_agg(o.state) filter (where o.state is distinct from s.state_unpaid
                                        and not (tg_op = 'DELETE' and o.state = s.state_cancelled)))[1]
    into stale, bad_order, bad_state
    from (select o.order_id, o.state, o.xmin from public.new_order o
           where o.order_id = any (line_orders)
           order by o.order_id
             for no key update) o;
  if bad_order is null and jsonb_array_length(journal) > 0 then
    select j.o, j.f into bad_order, bad_state
      from jsonb_to_recordset(journal) as j(o text, s text, f integer)
     where j.o = any (line_orders) and j.f is not null
       and j.f is distinct from s.state_unpaid and not (tg_op = 'DELETE' and j.f = s.state_cancelled)
     limit 1;
  end if;
  if bad_order is not null then
    raise exception using errcode = 'OA004',
      message = format('order %s is in state %s: its lines can change only while it is unpaid (state %s)',
                       bad_order, bad_state, s.state_unpaid);
  end if;
  -- A new version of each unpaid order another transaction wrote last: a transaction under
  -- REPEATABLE READ or SERIALIZABLE whose snapshot still shows the old lines then fails (40001) when
  -- it pays or cancels the order, instead of booking the lines it sees. A lock alone would not do: a
  -- lock of a transaction that has ended is no conflict. The column is one no trigger of the package
  -- watches. An order this transaction wrote (placed it, say) has its new version already.
  if stale is not null then
    update public.new_order o set receipt_deadline = o.receipt_deadline where o.order_id = any (stale);
  end if;
  writing := order_automation.close_statement('new_order_detail');

  if jsonb_array_length(journal) = 0 and not writing then
    -- Lines of cancelled orders hold no stock; lines written before their order are reserved when the
    -- order is placed.
    select array_agg(x.store_id), array_agg(x.book_id), array_agg(x.delta), array_agg(x.order_id)
      into stores, books, deltas, orders
      from (select o.store_id, l.book_id, sum(l.delta)::integer as delta, min(l.order_id) as order_id
              from unnest(line_orders, line_books, line_deltas) as l(order_id, book_id, delta)
              join public.new_order o on o.order_id = l.order_id
             where o.state = s.state_unpaid
             group by o.store_id, l.book_id
            having sum(l.delta) <> 0) x;
  else
    -- The same, but an order a statement still open moved is judged by its state before it, and its
    -- lines booked against its store (it may be gone): those of an order placed by the statement
    -- were reserved by its trigger.
    select array_agg(x.store_id order by x.n), array_agg(x.booked order by x.n)
      into line_stores, line_booked
      from (select l.n, coalesce(j.s, o.store_id) as store_id,
                   case when j.o is not null then coalesce(j.f = s.state_unpaid, false)
                        else coalesce(o.state = s.state_unpaid, false) end as booked
              from unnest(line_orders) with ordinality as l(order_id, n)
              left join public.new_order o on o.order_id = l.order_id
              left join (select distinct on (e.o) e.o, e.s, e.f
                           from rows from (jsonb_to_recordset(journal) as (o text, s text, f integer))
                                with ordinality as e(o, s, f, n)
                          order by e.o, e.n) j on j.o = l.order_id) x;
    select array_agg(x.store_id), array_agg(x.book_id), array_agg(x.delta), array_agg(x.order_id)
      into stores, books, deltas, orders
      from (select l.store_id, l.book_id, sum(l.delta)::integer as delta, min(l.order_id) as order_id
              from unnest(line_orders, line_books, line_deltas, line_stores, line_booked)
                   as l(order_id, book_id, delta, store_id, booked)
             where l.booked
             group by l.store_id, l.book_id
            having sum(l.delta) <> 0) x;
    -- A statement on new_order is still open: its trigger settles these lines with what it knows
    -- (the state each order had before it), so they are written down: books returned, books booked.
    if writing then
      perform order_automation.write_statement_journal('changed_lines',
        order_automation.statement_journal('changed_lines')
        || (select jsonb_agg(jsonb_build_object('o', l.order_id, 'b', l.book_id, 'u', l.u, 'k', l.k))
              from (select l.order_id, l.book_id, sum(l.delta) as u, coalesce(sum(l.delta) filter (where l.booked), 0) as k
                      from unnest(line_orders, line_books, line_deltas, line_booked) as l(order_id, book_id, delta, booked)
                     group by l.order_id, l.book_id) l));
    end if;
  end if;
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
