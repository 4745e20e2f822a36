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
