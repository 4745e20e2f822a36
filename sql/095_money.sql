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
