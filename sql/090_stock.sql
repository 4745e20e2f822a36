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
