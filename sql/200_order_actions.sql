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
        message = format('order %s is already %s', set_order_state.order_id, order_automation.state_label(set_order_state.to_state));
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
