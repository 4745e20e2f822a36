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
