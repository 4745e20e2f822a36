-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0008_managed.ts. Never edit.

-- >>> 070_state_codes.sql diff
@@ -42,2 +42,18 @@
                    is distinct from (new.state_unpaid, new.state_shipped, new.state_cancelled))
 execute function order_automation.tg_settings__state_codes();
+
+-- Refusals name a state as the TypeScript API does, with the code a plain UPDATE writes: 'paid (1)',
+-- or 'cancelled (-1)' for an app whose codes differ; a code that is none of the five says so.
+create or replace function order_automation.state_label(code integer) returns text
+language sql stable
+set search_path = pg_catalog, pg_temp
+as $$
+  select format('%s (%s)',
+                case state_label.code when s.state_unpaid then 'unpaid' when s.state_paid then 'paid'
+                                      when s.state_shipped then 'shipped' when s.state_received then 'received'
+                                      when s.state_cancelled then 'cancelled' else 'an unknown state' end,
+                coalesce(state_label.code::text, 'null'))
+    from order_automation.settings s
+$$;
+comment on function order_automation.state_label(integer) is
+  'A state code named by the codes in settings, as the messages of refusals say it: ''paid (1)''';

-- >>> 100_order_lifecycle.sql diff
@@ -59,5 +59,6 @@
   if s.bookkeeping = 'full' and new.state is distinct from s.state_unpaid then
     raise exception using errcode = 'OA001',
-      message = format('order %s must be placed unpaid (state %s), not in state %s', new.order_id, s.state_unpaid, new.state);
+      message = format('order %s must be placed %s, not %s', new.order_id,
+                       order_automation.state_label(s.state_unpaid), order_automation.state_label(new.state));
   end if;
   -- An adopted table's created_at has no default (adding one would stamp every existing order).
@@ -103,6 +104,6 @@
   if found then
     raise exception using errcode = 'OA001',
-      message = format('order %s was closed by the automation (%s at %s): its state stays %s',
-                       old.order_id, by_job.cause, by_job.at, old.state),
+      message = format('order %s was closed by the automation (%s at %s): it stays %s',
+                       old.order_id, by_job.cause, by_job.at, order_automation.state_label(old.state)),
       hint = 'The automation has booked it (books back on the shelf, or the seller paid): do not book it again.';
   end if;
@@ -259,8 +260,8 @@
   if bad_order is not null and s.bookkeeping = 'full' then
     raise exception using errcode = 'OA001',
-      message = format('order %s cannot change from state %s to state %s', bad_order, bad_from, bad_to),
-      hint = format('Allowed: %s unpaid -> %s paid -> %s shipped -> %s received; %s or %s -> %s cancelled.',
-                    s.state_unpaid, s.state_paid, s.state_shipped, s.state_received, s.state_unpaid, s.state_paid,
-                    s.state_cancelled);
+      message = format('order %s cannot change from %s to %s', bad_order,
+                       order_automation.state_label(bad_from), order_automation.state_label(bad_to)),
+      hint = format('Allowed: unpaid (%s) -> paid (%s) -> shipped (%s) -> received (%s); unpaid or paid -> cancelled (%s).',
+                    s.state_unpaid, s.state_paid, s.state_shipped, s.state_received, s.state_cancelled);
   end if;
 
@@ -333,5 +334,5 @@
     if found then
       raise exception using errcode = 'OA001',
-        message = format('order %s cannot be deleted in state %s', bad.order_id, bad.state),
+        message = format('order %s cannot be deleted while %s', bad.order_id, order_automation.state_label(bad.state)),
         hint = format('Only unpaid (%s) and cancelled (%s) orders can be deleted.', s.state_unpaid, s.state_cancelled);
     end if;

-- >>> 200_order_actions.sql diff
@@ -20,5 +20,5 @@
     if exists (select from public.new_order o where o.order_id = set_order_state.order_id) then
       raise exception using errcode = 'OA001',
-        message = format('order %s is already in state %s', set_order_state.order_id, set_order_state.to_state);
+        message = format('order %s is already %s', set_order_state.order_id, order_automation.state_label(set_order_state.to_state));
     end if;
     raise exception using errcode = 'OA005', message = format('order %s does not exist', set_order_state.order_id);

-- >>> 210_order_holds.sql diff
@@ -78,5 +78,6 @@
   if o.state is distinct from s.state_unpaid then
     raise exception using errcode = 'OA001',
-      message = format('order %s is in state %s: a payment can start only while it is unpaid (%s)', o.order_id, o.state, s.state_unpaid);
+      message = format('order %s is %s: a payment can start only while it is %s', o.order_id,
+                       order_automation.state_label(o.state), order_automation.state_label(s.state_unpaid));
   end if;
   perform set_config('order_automation.cause', 'payment_started', true);
@@ -116,5 +117,6 @@
   if o.state is distinct from s.state_shipped then
     raise exception using errcode = 'OA001',
-      message = format('order %s is in state %s: its receipt deadline can be extended only while shipped (%s)', o.order_id, o.state, s.state_shipped);
+      message = format('order %s is %s: its receipt deadline can be extended only while %s', o.order_id,
+                       order_automation.state_label(o.state), order_automation.state_label(s.state_shipped));
   end if;
   if o.receipt_extended_at is not null then
@@ -154,5 +156,6 @@
   end if;
   if o.state in (s.state_received, s.state_cancelled) then
-    raise exception using errcode = 'OA001', message = format('order %s is in final state %s: it cannot be held', o.order_id, o.state);
+    raise exception using errcode = 'OA001',
+      message = format('order %s is %s, a final state: it cannot be held', o.order_id, order_automation.state_label(o.state));
   end if;
   if o.held_at is not null then

-- >>> 600_privileges.sql diff
@@ -47,5 +47,7 @@
       order_automation.payment_started(text, interval), order_automation.extend_receipt(text, interval),
       order_automation.hold(text, text), order_automation.release(text),
-      order_automation.set_order_state(text, smallint, text)
+      order_automation.set_order_state(text, smallint, text),
+      -- The refusals of the functions above name states through it, with the caller's rights.
+      order_automation.state_label(integer)
       to order_automation_app;
   end if;
