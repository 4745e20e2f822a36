-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0004_bounds.ts. Never edit.

-- >>> 010_bookstore.sql recorded sha256:0ca9ce59dd576d213d655569d6a4218e9c96c87f56326635e11a7eb7d6c8a0b9

-- >>> 020_automation_schema.sql recorded sha256:6b374bc077c1d6f927657a52bf5a7f024f03f512dda0e705f30edb565a3e8209

-- >>> 210_order_holds.sql diff
@@ -1,39 +1,56 @@
 -- What shops ask for beyond the two rules: a payment in flight is not cancelled under the
--- buyer, the buyer may push the receipt deadline once, and a disputed order can be held. The four
--- entry points run as the package's owner, so an app role needs only EXECUTE on them.
+-- buyer, the buyer may push the receipt deadline once, and a disputed order can be held.
+-- The four entry points run with the caller's rights, like pay_order: a shop's row-level security and
+-- column grants on new_order bind them (an order the caller cannot see does not exist for it; a role
+-- without UPDATE on new_order cannot act), and they return the row as the caller may see it. Their
+-- events are written by a trigger that runs as the package's owner, so no caller writes the history.
 
-create or replace function order_automation.note_event(order_id text, state smallint, cause text, note text)
-returns void
-language sql
-set search_path = pg_catalog, pg_temp
-as $$
-  insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
-  values (note_event.order_id, note_event.state, note_event.state, note_event.cause, note_event.note);
-  select pg_notify('order_automation', 'order_event');
-$$;
-comment on function order_automation.note_event(text, smallint, text, text) is
-  'Records an event that is not a state change (from_state = to_state) in order_event';
-
--- Locks one order for a change that is not a state change, or says why it cannot be had.
-create or replace function order_automation.lock_order(order_id text) returns public.new_order
+create or replace function order_automation.tg_new_order__note() returns trigger
 language plpgsql
+security definer
 set search_path = pg_catalog, pg_temp
+-- The deadlines in the notes are printed in UTC whatever the writer's TimeZone.
+set timezone = 'UTC'
 as $$
 declare
-  found_order public.new_order;
+  event_cause text;
+  event_note text;
 begin
-  select o.* into found_order from public.new_order o where o.order_id = lock_order.order_id for no key update;
-  if not found then
-    raise exception using errcode = 'OA005', message = format('order %s does not exist', lock_order.order_id);
+  -- Read from the row, not from the caller: the event says what the change did.
+  if old.held_at is null and new.held_at is not null then
+    event_cause := 'hold';
+    event_note := new.hold_reason;
+  elsif old.held_at is not null and new.held_at is null then
+    event_cause := 'release';
+  elsif old.receipt_extended_at is null and new.receipt_extended_at is not null then
+    event_cause := 'receipt_extended';
+    event_note := format('receipt deadline now %s', new.receipt_deadline);
+  elsif current_setting('order_automation.cause', true) = 'payment_started' then
+    -- payment_started() names itself: its deadline may not move (a later one was already set).
+    event_cause := 'payment_started';
+    event_note := format('not cancelled before %s', new.pay_deadline);
+  else
+    return null;  -- a hold's time rewritten while it lasts: no hold starts or ends
   end if;
-  return found_order;
+  insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
+  values (new.order_id, new.state, new.state, event_cause, event_note);
+  perform pg_notify('order_automation', 'order_event');
+  return null;
 end $$;
-comment on function order_automation.lock_order(text) is
-  'Locks an order row (waiting for a run that holds it) and returns it; OA005 when it does not exist';
+comment on function order_automation.tg_new_order__note() is
+  'Records a hold, a release, a receipt extension or a started payment of an order as an event without a state change (from_state = to_state)';
+
+-- Only when a hold or an extension starts or ends, or payment_started() changes the row: the
+-- automation's set-based updates name none of these columns, so they never fire it. The condition
+-- calls only pg_catalog: a shop's role that updates new_order needs no right on the package for it.
+create or replace trigger _900_noted after update of held_at, receipt_extended_at, pay_deadline on public.new_order
+for each row when (old.held_at is distinct from new.held_at
+                or old.receipt_extended_at is distinct from new.receipt_extended_at
+                or current_setting('order_automation.cause', true) = 'payment_started')
+execute function order_automation.tg_new_order__note();
 
 create or replace function order_automation.payment_started(order_id text, grace interval default null)
 returns public.new_order
 language plpgsql
-security definer
 set search_path = pg_catalog, pg_temp
 -- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
@@ -41,29 +58,38 @@
 as $$
 declare
-  o public.new_order := order_automation.lock_order(payment_started.order_id);
-  safe_until timestamptz := now() + coalesce(payment_started.grace, (select s.payment_grace from order_automation.settings s));
+  o public.new_order;
+  safe_for interval := coalesce(payment_started.grace, (select s.payment_grace from order_automation.settings s));
 begin
-  if payment_started.grace <= interval '0' then
-    raise exception using errcode = 'OA006', message = format('order %s: grace must be a positive interval, not %s', o.order_id, payment_started.grace);
+  if length(payment_started.order_id) > 255 then
+    raise exception using errcode = 'OA006',
+      message = format('an order id is at most 255 characters, not %s', length(payment_started.order_id));
+  end if;
+  if safe_for <= interval '0' or safe_for > interval '365 days' then
+    raise exception using errcode = 'OA006',
+      message = format('order %s: grace must be a positive interval of at most 365 days, not %s', payment_started.order_id, safe_for);
+  end if;
+  -- Locked (waiting for a run that holds it): if the canceller got there first the order is
+  -- cancelled now, and the app learns that the payment must not be taken.
+  select n.* into o from public.new_order n where n.order_id = payment_started.order_id for no key update;
+  if not found then
+    raise exception using errcode = 'OA005', message = format('order %s does not exist', payment_started.order_id);
   end if;
-  -- Locked above: if the canceller got there first the order is cancelled now, and the app learns
-  -- that the payment must not be taken.
   if o.state <> 0 then
     raise exception using errcode = 'OA001',
       message = format('order %s is in state %s: a payment can start only while it is unpaid (0)', o.order_id, o.state);
   end if;
-  update public.new_order n set pay_deadline = greatest(n.pay_deadline, safe_until)
+  perform set_config('order_automation.cause', 'payment_started', true);
+  update public.new_order n set pay_deadline = greatest(n.pay_deadline, now() + safe_for)
    where n.order_id = o.order_id
   returning n.* into o;
-  perform order_automation.note_event(o.order_id, 0::smallint, 'payment_started', format('not cancelled before %s', safe_until));
+  perform set_config('order_automation.cause', '', true);
   return o;
 end $$;
 comment on function order_automation.payment_started(text, interval) is
-  'Called when a payment attempt begins: the order is not auto-cancelled before now() + grace (default: payment_grace). OA001 unless unpaid';
+  'Called when a payment attempt begins: the order is not auto-cancelled before now() + grace (default: payment_grace; at most 365 days). OA001 unless unpaid';
 
 create or replace function order_automation.extend_receipt(order_id text, by interval default null)
 returns public.new_order
 language plpgsql
-security definer
 set search_path = pg_catalog, pg_temp
 -- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
@@ -71,9 +97,18 @@
 as $$
 declare
-  o public.new_order := order_automation.lock_order(extend_receipt.order_id);
+  o public.new_order;
   extension interval := coalesce(extend_receipt.by, (select s.receipt_extension from order_automation.settings s));
 begin
-  if extension <= interval '0' then
-    raise exception using errcode = 'OA006', message = format('order %s: by must be a positive interval, not %s', o.order_id, extension);
+  if length(extend_receipt.order_id) > 255 then
+    raise exception using errcode = 'OA006',
+      message = format('an order id is at most 255 characters, not %s', length(extend_receipt.order_id));
+  end if;
+  if extension <= interval '0' or extension > interval '365 days' then
+    raise exception using errcode = 'OA006',
+      message = format('order %s: by must be a positive interval of at most 365 days, not %s', extend_receipt.order_id, extension);
+  end if;
+  select n.* into o from public.new_order n where n.order_id = extend_receipt.order_id for no key update;
+  if not found then
+    raise exception using errcode = 'OA005', message = format('order %s does not exist', extend_receipt.order_id);
   end if;
   if o.state <> 2 then
@@ -88,20 +123,30 @@
    where n.order_id = o.order_id
   returning n.* into o;
-  perform order_automation.note_event(o.order_id, 2::smallint, 'receipt_extended', format('receipt deadline now %s', o.receipt_deadline));
   return o;
 end $$;
 comment on function order_automation.extend_receipt(text, interval) is
-  'The buyer pushes the receipt deadline once, by `by` (default: receipt_extension). OA001 unless shipped, OA007 the second time';
+  'The buyer pushes the receipt deadline once, by `by` (default: receipt_extension; at most 365 days). OA001 unless shipped, OA007 the second time';
 
 create or replace function order_automation.hold(order_id text, reason text) returns public.new_order
 language plpgsql
-security definer
 set search_path = pg_catalog, pg_temp
 as $$
 declare
-  o public.new_order := order_automation.lock_order(hold.order_id);
+  o public.new_order;
 begin
+  if length(hold.order_id) > 255 then
+    raise exception using errcode = 'OA006',
+      message = format('an order id is at most 255 characters, not %s', length(hold.order_id));
+  end if;
+  if length(hold.reason) > 1000 then
+    raise exception using errcode = 'OA006',
+      message = format('order %s: a hold reason is at most 1000 characters, not %s', hold.order_id, length(hold.reason));
+  end if;
   if coalesce(btrim(hold.reason), '') = '' then
-    raise exception using errcode = 'OA006', message = format('order %s: a hold needs a reason', o.order_id);
+    raise exception using errcode = 'OA006', message = format('order %s: a hold needs a reason', hold.order_id);
+  end if;
+  select n.* into o from public.new_order n where n.order_id = hold.order_id for no key update;
+  if not found then
+    raise exception using errcode = 'OA005', message = format('order %s does not exist', hold.order_id);
   end if;
   if o.state in (3, 4) then
@@ -114,13 +159,11 @@
    where n.order_id = o.order_id
   returning n.* into o;
-  perform order_automation.note_event(o.order_id, o.state, 'hold', hold.reason);
   return o;
 end $$;
 comment on function order_automation.hold(text, text) is
-  'Holds an order (dispute, refund request, review): neither auto-cancelled nor auto-confirmed until released; its countdown pauses. OA008 when already held';
+  'Holds an order (dispute, refund request, review): neither auto-cancelled nor auto-confirmed until released; its countdown pauses. The reason is at most 1000 characters. OA008 when already held';
 
 create or replace function order_automation.release(order_id text) returns public.new_order
 language plpgsql
-security definer
 set search_path = pg_catalog, pg_temp
 -- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
@@ -128,6 +171,14 @@
 as $$
 declare
-  o public.new_order := order_automation.lock_order(release.order_id);
+  o public.new_order;
 begin
+  if length(release.order_id) > 255 then
+    raise exception using errcode = 'OA006',
+      message = format('an order id is at most 255 characters, not %s', length(release.order_id));
+  end if;
+  select n.* into o from public.new_order n where n.order_id = release.order_id for no key update;
+  if not found then
+    raise exception using errcode = 'OA005', message = format('order %s does not exist', release.order_id);
+  end if;
   if o.held_at is null then
     raise exception using errcode = 'OA008', message = format('order %s is not held', o.order_id);
@@ -141,5 +192,4 @@
    where n.order_id = o.order_id
   returning n.* into o;
-  perform order_automation.note_event(o.order_id, o.state, 'release', null);
   return o;
 end $$;

-- >>> 600_privileges.sql from 0003_trust
