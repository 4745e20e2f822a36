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
