-- What shops ask for beyond the two rules: a payment in flight is not cancelled under the
-- buyer, the buyer may push the receipt deadline once, and a disputed order can be held.
-- The four entry points run with the caller's rights, like pay_order: a shop's row-level security and
-- column grants on new_order bind them (an order the caller cannot see does not exist for it; a role
-- without UPDATE on new_order cannot act), and they return the row as the caller may see it. Their
-- events are written by a trigger that runs as the package's owner, so no caller writes the history.

create or replace function order_automation.tg_new_order__note() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- The deadlines in the notes are printed in UTC whatever the writer's TimeZone.
set timezone = 'UTC'
as $$
declare
  event_cause text;
  event_note text;
begin
  -- Read from the row, not from the caller: the event says what the change did.
  if old.held_at is null and new.held_at is not null then
    event_cause := 'hold';
    event_note := new.hold_reason;
  elsif old.held_at is not null and new.held_at is null then
    event_cause := 'release';
  elsif old.receipt_extended_at is null and new.receipt_extended_at is not null then
    event_cause := 'receipt_extended';
    event_note := format('receipt deadline now %s', new.receipt_deadline);
  elsif current_setting('order_automation.cause', true) = 'payment_started' then
    -- payment_started() names itself: its deadline may not move (a later one was already set).
    event_cause := 'payment_started';
    event_note := format('not cancelled before %s', new.pay_deadline);
  else
    return null;  -- a hold's time rewritten while it lasts: no hold starts or ends
  end if;
  insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
  values (new.order_id, new.state, new.state, event_cause, event_note);
  perform pg_notify('order_automation', 'order_event');
  return null;
end $$;
comment on function order_automation.tg_new_order__note() is
  'Records a hold, a release, a receipt extension or a started payment of an order as an event without a state change (from_state = to_state)';

-- Only when a hold or an extension starts or ends, or payment_started() changes the row: the
-- automation's set-based updates name none of these columns, so they never fire it. The condition
-- calls only pg_catalog: a shop's role that updates new_order needs no right on the package for it.
create or replace trigger _900_noted after update of held_at, receipt_extended_at, pay_deadline on public.new_order
for each row when (old.held_at is distinct from new.held_at
                or old.receipt_extended_at is distinct from new.receipt_extended_at
                or current_setting('order_automation.cause', true) = 'payment_started')
execute function order_automation.tg_new_order__note();

create or replace function order_automation.payment_started(order_id text, grace interval default null)
returns public.new_order
language plpgsql
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
as $$
declare
  o public.new_order;
  s order_automation.settings := (select x from order_automation.settings x);
  safe_for interval := coalesce(payment_started.grace, s.payment_grace);
begin
  if length(payment_started.order_id) > 255 then
    raise exception using errcode = 'OA006',
      message = format('an order id is at most 255 characters, not %s', length(payment_started.order_id));
  end if;
  if safe_for <= interval '0' or safe_for > interval '365 days' then
    raise exception using errcode = 'OA006',
      message = format('order %s: grace must be a positive interval of at most 365 days, not %s', payment_started.order_id, safe_for);
  end if;
  -- Locked (waiting for a run that holds it): if the canceller got there first the order is
  -- cancelled now, and the app learns that the payment must not be taken.
  select n.* into o from public.new_order n where n.order_id = payment_started.order_id for no key update;
  if not found then
    raise exception using errcode = 'OA005', message = format('order %s does not exist', payment_started.order_id);
  end if;
  if o.state is distinct from s.state_unpaid then
    raise exception using errcode = 'OA001',
      message = format('order %s is %s: a payment can start only while it is %s', o.order_id,
                       order_automation.state_label(o.state), order_automation.state_label(s.state_unpaid));
  end if;
  perform set_config('order_automation.cause', 'payment_started', true);
  update public.new_order n set pay_deadline = greatest(n.pay_deadline, now() + safe_for)
   where n.order_id = o.order_id
  returning n.* into o;
  perform set_config('order_automation.cause', '', true);
  return o;
end $$;
comment on function order_automation.payment_started(text, interval) is
  'Called when a payment attempt begins: the order is not auto-cancelled before now() + grace (default: payment_grace; at most 365 days). OA001 unless unpaid';

create or replace function order_automation.extend_receipt(order_id text, by interval default null)
returns public.new_order
language plpgsql
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
as $$
declare
  o public.new_order;
  s order_automation.settings := (select x from order_automation.settings x);
  extension interval := coalesce(extend_receipt.by, s.receipt_extension);
begin
  if length(extend_receipt.order_id) > 255 then
    raise exception using errcode = 'OA006',
      message = format('an order id is at most 255 characters, not %s', length(extend_receipt.order_id));
  end if;
  if extension <= interval '0' or extension > interval '365 days' then
    raise exception using errcode = 'OA006',
      message = format('order %s: by must be a positive interval of at most 365 days, not %s', extend_receipt.order_id, extension);
  end if;
  select n.* into o from public.new_order n where n.order_id = extend_receipt.order_id for no key update;
  if not found then
    raise exception using errcode = 'OA005', message = format('order %s does not exist', extend_receipt.order_id);
  end if;
  if o.state is distinct from s.state_shipped then
    raise exception using errcode = 'OA001',
      message = format('order %s is %s: its receipt deadline can be extended only while %s', o.order_id,
                       order_automation.state_label(o.state), order_automation.state_label(s.state_shipped));
  end if;
  if o.receipt_extended_at is not null then
    raise exception using errcode = 'OA007',
      message = format('order %s: its receipt deadline was already extended at %s', o.order_id, o.receipt_extended_at);
  end if;
  update public.new_order n set receipt_deadline = n.receipt_deadline + extension, receipt_extended_at = now()
   where n.order_id = o.order_id
  returning n.* into o;
  return o;
end $$;
comment on function order_automation.extend_receipt(text, interval) is
  'The buyer pushes the receipt deadline once, by `by` (default: receipt_extension; at most 365 days). OA001 unless shipped, OA007 the second time';

create or replace function order_automation.hold(order_id text, reason text) returns public.new_order
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  o public.new_order;
  s order_automation.settings := (select x from order_automation.settings x);
begin
  if length(hold.order_id) > 255 then
    raise exception using errcode = 'OA006',
      message = format('an order id is at most 255 characters, not %s', length(hold.order_id));
  end if;
  if length(hold.reason) > 1000 then
    raise exception using errcode = 'OA006',
      message = format('order %s: a hold reason is at most 1000 characters, not %s', hold.order_id, length(hold.reason));
  end if;
  if coalesce(btrim(hold.reason), '') = '' then
    raise exception using errcode = 'OA006', message = format('order %s: a hold needs a reason', hold.order_id);
  end if;
  select n.* into o from public.new_order n where n.order_id = hold.order_id for no key update;
  if not found then
    raise exception using errcode = 'OA005', message = format('order %s does not exist', hold.order_id);
  end if;
  if o.state in (s.state_received, s.state_cancelled) then
    raise exception using errcode = 'OA001',
      message = format('order %s is %s, a final state: it cannot be held', o.order_id, order_automation.state_label(o.state));
  end if;
  if o.held_at is not null then
    raise exception using errcode = 'OA008', message = format('order %s is already held since %s (%s)', o.order_id, o.held_at, o.hold_reason);
  end if;
  update public.new_order n set held_at = now(), hold_reason = hold.reason
   where n.order_id = o.order_id
  returning n.* into o;
  return o;
end $$;
comment on function order_automation.hold(text, text) is
  'Holds an order (dispute, refund request, review): neither auto-cancelled nor auto-confirmed until released; its countdown pauses. The reason is at most 1000 characters. OA008 when already held';

create or replace function order_automation.release(order_id text) returns public.new_order
language plpgsql
set search_path = pg_catalog, pg_temp
-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
set timezone = 'UTC'
as $$
declare
  o public.new_order;
  s order_automation.settings := (select x from order_automation.settings x);
begin
  if length(release.order_id) > 255 then
    raise exception using errcode = 'OA006',
      message = format('an order id is at most 255 characters, not %s', length(release.order_id));
  end if;
  select n.* into o from public.new_order n where n.order_id = release.order_id for no key update;
  if not found then
    raise exception using errcode = 'OA005', message = format('order %s does not exist', release.order_id);
  end if;
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
  return o;
end $$;
comment on function order_automation.release(text) is
  'Releases a held order: its deadline moves by the time it was held, so the countdown resumes with the time that was left. OA008 when not held';
