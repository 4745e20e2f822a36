-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0009_starvation.ts. Never edit.

-- >>> 010_bookstore.sql recorded sha256:8f2bdbc8f0afb76e8a3439610338b9550da713d49da489615aabb9837eecc462

-- >>> 020_automation_schema.sql recorded sha256:a2a65fdce04f9d2a229941658db7ec864b29e04b3681232346974048ab1407b3

-- >>> 070_state_codes.sql diff
@@ -16,13 +16,13 @@
   drop index if exists public.new_order_pay_deadline_due, public.new_order_receipt_deadline_due,
     public.new_order_cancelled_at;
-  execute format('create index new_order_pay_deadline_due on public.new_order (pay_deadline) where state = %s and held_at is null',
-                 s.state_unpaid);
-  execute format('create index new_order_receipt_deadline_due on public.new_order (receipt_deadline) where state = %s and held_at is null',
-                 s.state_shipped);
+  execute format('create index new_order_pay_deadline_due on public.new_order (pay_deadline)
+                    where state = %1$s and held_at is null and (failed_state is null or failed_state <> %1$s)', s.state_unpaid);
+  execute format('create index new_order_receipt_deadline_due on public.new_order (receipt_deadline)
+                    where state = %1$s and held_at is null and (failed_state is null or failed_state <> %1$s)', s.state_shipped);
   execute format('create index new_order_cancelled_at on public.new_order (cancelled_at) where state = %s',
                  s.state_cancelled);
 end $$;
 comment on function order_automation.index_state_codes() is
-  'Rebuilds the partial indexes of new_order the automation probes (unpaid and shipped orders by deadline, cancelled ones by time) for the state codes in settings';
+  'Rebuilds the partial indexes of new_order the automation probes (unpaid and shipped orders by deadline, but those it failed to process in that state; cancelled ones by time) for the state codes in settings';
 
 create or replace function order_automation.tg_settings__state_codes() returns trigger

-- >>> 300_due_orders.sql diff
@@ -1,4 +1,10 @@
 -- The two automations: cancel unpaid orders past pay_deadline, confirm shipped orders past
 -- receipt_deadline. Batches of batch_size, a COMMIT after each, skipping rows others are changing.
+--
+-- Orders a job fails to process (an app's trigger refusing them, a book renamed in the store) must
+-- not starve the others: each is recorded once in failing_order and leaves the due scans; runs
+-- retry them only after every order never tried, least recently tried first, and stop at the first
+-- batch of retries that fails again. Thousands of failing orders cost a run one batch of retries,
+-- and a waiting run's probes nothing.
 
 create or replace function order_automation.due_orders(job text, as_of timestamptz, batch_size integer, skip_ids text[])
@@ -15,12 +21,19 @@
   s order_automation.settings := (select x from order_automation.settings x);
 begin
-  -- Locks up to batch_size due orders, oldest deadline first, skipping rows others are changing.
-  -- One static query per job, each matching its partial index.
+  -- Locks up to batch_size due orders, oldest deadline first, skipping rows others are changing and
+  -- orders the job is failing to process (retry_failing_batch retries those). One static query per
+  -- job, each matching its partial index, which leaves out the orders marked failed in that state;
+  -- the probe of failing_order keeps out those an app's trigger would not let be marked (offset 0:
+  -- one primary-key probe per order read, never a scan of failing_order).
   case due_orders.job
     when 'cancel_expired_orders' then
       select array_agg(d.order_id) into ids
         from (select o.order_id from public.new_order o
-               where o.state = s.state_unpaid and o.held_at is null and o.pay_deadline <= due_orders.as_of
+               where o.state = s.state_unpaid and o.held_at is null
+                 and (o.failed_state is null or o.failed_state <> s.state_unpaid)
+                 and o.pay_deadline <= due_orders.as_of
                  and o.order_id <> all (due_orders.skip_ids)
+                 and not exists (select from order_automation.failing_order f
+                                  where f.job = due_orders.job and f.order_id = o.order_id offset 0)
                order by o.pay_deadline
                limit due_orders.batch_size
@@ -29,6 +42,10 @@
       select array_agg(d.order_id) into ids
         from (select o.order_id from public.new_order o
-               where o.state = s.state_shipped and o.held_at is null and o.receipt_deadline <= due_orders.as_of
+               where o.state = s.state_shipped and o.held_at is null
+                 and (o.failed_state is null or o.failed_state <> s.state_shipped)
+                 and o.receipt_deadline <= due_orders.as_of
                  and o.order_id <> all (due_orders.skip_ids)
+                 and not exists (select from order_automation.failing_order f
+                                  where f.job = due_orders.job and f.order_id = o.order_id offset 0)
                order by o.receipt_deadline
                limit due_orders.batch_size
@@ -40,4 +57,6 @@
                  and o.cancelled_at <= due_orders.as_of - s.purge_cancelled_after
                  and o.order_id <> all (due_orders.skip_ids)
+                 and not exists (select from order_automation.failing_order f
+                                  where f.job = due_orders.job and f.order_id = o.order_id offset 0)
                order by o.cancelled_at
                limit due_orders.batch_size
@@ -47,5 +66,5 @@
 end $$;
 comment on function order_automation.due_orders(text, timestamptz, integer, text[]) is
-  'Locks and returns up to batch_size orders a job must process at as_of (held orders never are), skipping skip_ids and rows locked by others';
+  'Locks and returns up to batch_size orders a job must process at as_of (held orders never are), skipping skip_ids, the orders the job is failing to process (failing_order) and rows locked by others';
 
 create or replace function order_automation.process_orders(
@@ -92,17 +111,22 @@
   'Applies a job to orders due_orders() locked: cancel (unpaid ones), confirm (shipped ones), or delete (cancelled ones), none of them held; returns how many, and the latest after its deadline that one was processed';
 
-create or replace function order_automation.process_due_batch(
-  job text, as_of timestamptz, batch_size integer, run_id bigint, skip_ids text[],
+
+create or replace function order_automation.process_batch(
+  job text, ids text[], run_id bigint, retrying boolean,
   out processed bigint, out failed text[], out max_lateness interval
 )
 language plpgsql
+-- As the package's owner: only its routines write failing_order, so that no row of it is deleted
+-- while its order is marked failed (that order would be left out of the due scans and retried never).
+-- Whoever may call it can do no more than the job: process_orders re-checks every order's state.
+security definer
 set search_path = pg_catalog, pg_temp
--- A stuck lock ends the batch (and the run) instead of hanging the schedule; the run records why
--- and the next run retries. (No statement_timeout here: PostgreSQL arms it per top-level statement.)
-set lock_timeout = '5s'
 as $$
 declare
-  ids text[] := order_automation.due_orders(process_due_batch.job, process_due_batch.as_of,
-                                            process_due_batch.batch_size, process_due_batch.skip_ids);
+  s order_automation.settings := (select x from order_automation.settings x);
+  job_state smallint := case process_batch.job when 'cancel_expired_orders' then s.state_unpaid
+                                                when 'confirm_shipped_orders' then s.state_shipped
+                                                else s.state_cancelled end;
+  one_by_one boolean := false;
   one text;
   one_processed bigint;
@@ -110,17 +134,19 @@
   err_state text;
   err_message text;
+  err_states text[] := '{}'::text[];
+  err_messages text[] := '{}'::text[];
+  logged bigint;
 begin
   processed := 0;
   failed := '{}'::text[];
-  if cardinality(ids) = 0 then
+  if coalesce(cardinality(process_batch.ids), 0) = 0 then
     return;
   end if;
   begin
     select p.processed, p.max_lateness into processed, max_lateness
-      from order_automation.process_orders(process_due_batch.job, ids) p;
-    return;
+      from order_automation.process_orders(process_batch.job, process_batch.ids) p;
   exception
     when lock_not_available or deadlock_detected then raise;
-    when others then null;  -- some order of the batch is bad: find it below
+    when others then one_by_one := true;  -- some order of the batch is bad: find it below
   end;
 
@@ -131,36 +157,184 @@
   -- the two would deadlock. So first lock, sorted, every row the batch's bookkeeping can touch; the
   -- locks are kept until the batch commits, whatever order the orders then come in.
-  if process_due_batch.job = 'confirm_shipped_orders' then
-    perform 1 from public."user" u
-     where u.user_id in (select us.user_id from public.new_order o join public.user_store us on us.store_id = o.store_id
-                          where o.order_id = any (ids))
-     order by u.user_id
-       for no key update;
-  elsif process_due_batch.job = 'cancel_expired_orders' then
-    perform 1 from public.store s
-     where (s.store_id, s.book_id) in (select o.store_id, d.book_id from public.new_order o
-                                         join public.new_order_detail d on d.order_id = o.order_id
-                                        where o.order_id = any (ids))
-     order by s.store_id, s.book_id
-       for no key update of s;
+  if one_by_one then
+    if process_batch.job = 'confirm_shipped_orders' then
+      perform 1 from public."user" u
+       where u.user_id in (select us.user_id from public.new_order o join public.user_store us on us.store_id = o.store_id
+                            where o.order_id = any (process_batch.ids))
+       order by u.user_id
+         for no key update;
+    elsif process_batch.job = 'cancel_expired_orders' then
+      perform 1 from public.store st
+       where (st.store_id, st.book_id) in (select o.store_id, d.book_id from public.new_order o
+                                             join public.new_order_detail d on d.order_id = o.order_id
+                                            where o.order_id = any (process_batch.ids))
+       order by st.store_id, st.book_id
+         for no key update of st;
+    end if;
+    foreach one in array process_batch.ids loop
+      begin
+        select p.processed, p.max_lateness into one_processed, one_lateness
+          from order_automation.process_orders(process_batch.job, array[one]) p;
+        processed := processed + one_processed;
+        max_lateness := greatest(max_lateness, one_lateness);
+      exception
+        when lock_not_available or deadlock_detected then raise;
+        when others then
+          get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
+          failed := failed || one;
+          err_states := err_states || err_state;
+          err_messages := err_messages || err_message;
+      end;
+    end loop;
+  end if;
+
+  -- Retried orders processed at last (no longer in the job's state) are failing no more.
+  if process_batch.retrying then
+    delete from order_automation.failing_order f
+     where f.job = process_batch.job and f.order_id = any (process_batch.ids) and not f.order_id = any (failed)
+       and not exists (select from public.new_order o where o.order_id = f.order_id and o.state = job_state);
+  end if;
+  if cardinality(failed) = 0 then
+    return;
   end if;
-  foreach one in array ids loop
+
+  -- The run's log keeps the first 100 failures it meets, so that a run meeting thousands of failing
+  -- orders writes a bounded log (run.failed counts them all); failing_order keeps each failing order
+  -- once, with how many times it failed and its last error.
+  select count(*) into logged
+    from (select from order_automation.order_failure f
+           where f.run_id = process_batch.run_id and f.step is null limit 100) x;
+  insert into order_automation.order_failure (run_id, order_id, sqlstate, message)
+  select process_batch.run_id, u.order_id, u.sqlstate, u.message
+    from unnest(failed, err_states, err_messages) with ordinality u(order_id, sqlstate, message, n)
+   order by u.n
+   limit greatest(100 - logged, 0);
+  insert into order_automation.failing_order as f (job, order_id, sqlstate, message, last_run_id)
+  select process_batch.job, u.order_id, u.sqlstate, u.message, process_batch.run_id
+    from unnest(failed, err_states, err_messages) u(order_id, sqlstate, message)
+  on conflict on constraint failing_order_pkey do update
+    set failures = f.failures + 1, last_failed_at = excluded.last_failed_at, tried_at = excluded.tried_at,
+        sqlstate = excluded.sqlstate, message = excluded.message, last_run_id = excluded.last_run_id;
+
+  -- Marked failed in their state, the orders leave its due index: however many fail, the due scans
+  -- and the waiter's probes never walk them again. An app's trigger may refuse even this update:
+  -- such an order stays in the index, and its failing_order row keeps it out of the due scans.
+  -- (Cancelled orders are not marked: the purge's index holds them all, and its failures are rare.)
+  if process_batch.job <> 'purge_cancelled_orders' then
     begin
-      select p.processed, p.max_lateness into one_processed, one_lateness
-        from order_automation.process_orders(process_due_batch.job, array[one]) p;
-      processed := processed + one_processed;
-      max_lateness := greatest(max_lateness, one_lateness);
+      update public.new_order o set failed_state = job_state
+       where o.order_id = any (failed) and o.state = job_state and o.failed_state is distinct from job_state;
     exception
       when lock_not_available or deadlock_detected then raise;
       when others then
-        get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
-        insert into order_automation.order_failure (run_id, order_id, sqlstate, message)
-        values (process_due_batch.run_id, one, err_state, err_message);
-        failed := failed || one;
+        foreach one in array failed loop
+          begin
+            update public.new_order o set failed_state = job_state
+             where o.order_id = one and o.state = job_state and o.failed_state is distinct from job_state;
+          exception
+            when lock_not_available or deadlock_detected then raise;
+            when others then null;  -- left in the index, kept out of the due scans by failing_order
+          end;
+        end loop;
     end;
-  end loop;
+  end if;
+end $$;
+comment on function order_automation.process_batch(text, text[], bigint, boolean) is
+  'Processes orders a run locked (set-based, else order by order); records those that fail in failing_order (and the run''s first 100 in order_failure) and marks them failed in their state; retrying: deletes the failing_order rows of those processed. Returns how many were processed, the failed ones, and the latest after its deadline one was';
+
+create or replace function order_automation.process_due_batch(
+  job text, as_of timestamptz, batch_size integer, run_id bigint, skip_ids text[],
+  out processed bigint, out failed text[], out max_lateness interval
+)
+language plpgsql
+set search_path = pg_catalog, pg_temp
+-- A stuck lock ends the batch (and the run) instead of hanging the schedule; the run records why
+-- and the next run retries. (No statement_timeout here: PostgreSQL arms it per top-level statement.)
+set lock_timeout = '5s'
+as $$
+begin
+  select b.processed, b.failed, b.max_lateness into processed, failed, max_lateness
+    from order_automation.process_batch(
+           process_due_batch.job,
+           order_automation.due_orders(process_due_batch.job, process_due_batch.as_of, process_due_batch.batch_size,
+                                       process_due_batch.skip_ids),
+           process_due_batch.run_id, false) b;
 end $$;
 comment on function order_automation.process_due_batch(text, timestamptz, integer, bigint, text[]) is
-  'One batch of a run: processes up to batch_size due orders not in skip_ids; returns how many, the orders that failed (recorded in order_failure), and the latest after its deadline that one was processed';
+  'One batch of a run: processes up to batch_size due orders not in skip_ids and not failing (failing_order); returns how many, the orders that failed (recorded in failing_order), and the latest after its deadline that one was processed';
+
+create or replace function order_automation.retry_failing_batch(
+  job text, as_of timestamptz, batch_size integer, run_id bigint,
+  out processed bigint, out failed text[], out max_lateness interval
+)
+language plpgsql
+-- As the package's owner, as process_batch: only the package's routines write failing_order.
+security definer
+set search_path = pg_catalog, pg_temp
+-- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
+set timezone = 'UTC'
+set lock_timeout = '5s'
+set plan_cache_mode = force_custom_plan
+as $$
+declare
+  s order_automation.settings := (select x from order_automation.settings x);
+  from_state smallint := case retry_failing_batch.job when 'cancel_expired_orders' then s.state_unpaid
+                                                       when 'confirm_shipped_orders' then s.state_shipped
+                                                       else s.state_cancelled end;
+  ids text[];
+begin
+  -- An order that left the job's state (paid, cancelled or deleted by the shop) is failing no more.
+  -- Never tried again, its row comes to the front of the line: the front is tidied at each batch
+  -- (twice a batch of rows, one primary-key probe each). Rows another run holds are skipped, never
+  -- waited for.
+  delete from order_automation.failing_order f
+   where f.job = retry_failing_batch.job
+     and f.order_id in (select g.order_id from order_automation.failing_order g
+                         where g.job = retry_failing_batch.job
+                           and g.order_id = any (array(select h.order_id from order_automation.failing_order h
+                                                        where h.job = retry_failing_batch.job
+                                                        order by h.tried_at
+                                                        limit 2 * retry_failing_batch.batch_size))
+                           and not exists (select from public.new_order o
+                                            where o.order_id = g.order_id and o.state = from_state offset 0)
+                           for update skip locked);
+  -- The failing orders of the job tried least recently (not by this run) and due, locked as
+  -- due_orders locks them (rows others are changing skipped): the failing_order rows in the order
+  -- of their last try, each order by its primary key. Those held or not yet due are passed over.
+  case retry_failing_batch.job
+    when 'cancel_expired_orders' then
+      select array_agg(d.order_id) into ids
+        from (select o.order_id from order_automation.failing_order f
+                join public.new_order o on o.order_id = f.order_id
+               where f.job = retry_failing_batch.job and f.last_run_id is distinct from retry_failing_batch.run_id
+                 and o.state = s.state_unpaid and o.held_at is null and o.pay_deadline <= retry_failing_batch.as_of
+               order by f.tried_at
+               limit retry_failing_batch.batch_size
+                 for no key update of o skip locked) d;
+    when 'confirm_shipped_orders' then
+      select array_agg(d.order_id) into ids
+        from (select o.order_id from order_automation.failing_order f
+                join public.new_order o on o.order_id = f.order_id
+               where f.job = retry_failing_batch.job and f.last_run_id is distinct from retry_failing_batch.run_id
+                 and o.state = s.state_shipped and o.held_at is null and o.receipt_deadline <= retry_failing_batch.as_of
+               order by f.tried_at
+               limit retry_failing_batch.batch_size
+                 for no key update of o skip locked) d;
+    when 'purge_cancelled_orders' then
+      select array_agg(d.order_id) into ids
+        from (select o.order_id from order_automation.failing_order f
+                join public.new_order o on o.order_id = f.order_id
+               where f.job = retry_failing_batch.job and f.last_run_id is distinct from retry_failing_batch.run_id
+                 and o.state = s.state_cancelled
+                 and o.cancelled_at <= retry_failing_batch.as_of - s.purge_cancelled_after
+               order by f.tried_at
+               limit retry_failing_batch.batch_size
+                 for update of o skip locked) d;
+  end case;
+  select b.processed, b.failed, b.max_lateness into processed, failed, max_lateness
+    from order_automation.process_batch(retry_failing_batch.job, ids, retry_failing_batch.run_id, true) b;
+end $$;
+comment on function order_automation.retry_failing_batch(text, timestamptz, integer, bigint) is
+  'One batch of retries: forgets the failing orders at the front of the line that left the job''s state; locks up to batch_size orders of failing_order the job tried least recently (not by run_id) and still due, and processes them as process_due_batch does. Returns how many were processed, those that failed again, and the latest after its deadline one was';
 
 create or replace function order_automation.remind_due_soon(
@@ -195,4 +369,5 @@
   end if;
   soon_state := case remind_due_soon.job when 'cancel_expired_orders' then unpaid else shipped end;
+  -- Each query matches its state's due index (orders marked failed left out: they are past due).
   -- A reminder is a side step of the run: best effort. Rows others hold are skipped (reminded by a
   -- later run), a row that fails is skipped and recorded, at most max_orders are taken per run, and
@@ -207,5 +382,5 @@
       select array_agg(d.order_id) into ids
         from (select o.order_id from public.new_order o
-               where o.state = unpaid and o.held_at is null
+               where o.state = unpaid and o.held_at is null and (o.failed_state is null or o.failed_state <> unpaid)
                  and o.pay_deadline > remind_due_soon.as_of and o.pay_deadline <= horizon
                  and o.reminded_state is distinct from unpaid
@@ -216,5 +391,5 @@
       select array_agg(d.order_id) into ids
         from (select o.order_id from public.new_order o
-               where o.state = shipped and o.held_at is null
+               where o.state = shipped and o.held_at is null and (o.failed_state is null or o.failed_state <> shipped)
                  and o.receipt_deadline > remind_due_soon.as_of and o.receipt_deadline <= horizon
                  and o.reminded_state is distinct from shipped
@@ -294,6 +469,6 @@
 -- lock held forever on one of the package's tables ends the run instead of hanging the schedule.
 create or replace procedure order_automation.run_due_orders_in_batches(
-  jobs text[], run_ids bigint[], as_of timestamptz, batch_size integer, stop_at timestamptz,
-  inout skip_ids text[], inout error_job text, inout error_state text, inout error_message text
+  jobs text[], run_ids bigint[], as_of timestamptz, batch_size integer, stop_at timestamptz, retry boolean,
+  inout error_job text, inout error_state text, inout error_message text
 )
 language plpgsql
@@ -304,4 +479,5 @@
   batch_failed pg_catalog.text[];
   batch_lateness interval;
+  retry_size integer;
 begin
   -- One batch of each job in turn, so that a backlog of one job never holds the other's deadlines
@@ -316,5 +492,5 @@
           from order_automation.process_due_batch(
                  run_due_orders_in_batches.jobs[i], run_due_orders_in_batches.as_of, run_due_orders_in_batches.batch_size,
-                 run_due_orders_in_batches.run_ids[i], run_due_orders_in_batches.skip_ids) b;
+                 run_due_orders_in_batches.run_ids[i], '{}'::pg_catalog.text[]) b;
       -- query_canceled too (a cancel request, a caller's statement_timeout): the run records it, then re-raises.
       exception when others or query_canceled then
@@ -325,5 +501,4 @@
       -- Nothing done, nothing written: a pass that finds nothing due costs no WAL.
       if batch_processed operator(pg_catalog.>) 0 or pg_catalog.cardinality(batch_failed) operator(pg_catalog.>) 0 then
-        skip_ids := skip_ids operator(pg_catalog.||) batch_failed;
         update order_automation.run r
            set processed = r.processed operator(pg_catalog.+) batch_processed,
@@ -339,7 +514,44 @@
     end loop;
   end loop;
+
+  -- Then, when asked (once a run: not at each pass of a waiting run) and while time is left, the
+  -- orders that failed before, after every order never tried: batches of them, job by job, until a
+  -- batch fails again. However many are failing, a run spends at most one failing batch a job on
+  -- them (of 100 orders at most: a fraction of a second, which a waiting run's deadlines can spare),
+  -- and the next run takes the next ones; orders fixed meanwhile are all processed.
+  if not run_due_orders_in_batches.retry then
+    return;
+  end if;
+  retry_size := least(run_due_orders_in_batches.batch_size, 100);
+  for i in 1 .. pg_catalog.cardinality(run_due_orders_in_batches.jobs) loop
+    loop
+      exit when pg_catalog.clock_timestamp() operator(pg_catalog.>=) run_due_orders_in_batches.stop_at;
+      perform pg_catalog.set_config('lock_timeout', '5s', true);
+      begin
+        select b.processed, b.failed, b.max_lateness into batch_processed, batch_failed, batch_lateness
+          from order_automation.retry_failing_batch(
+                 run_due_orders_in_batches.jobs[i], run_due_orders_in_batches.as_of, retry_size,
+                 run_due_orders_in_batches.run_ids[i]) b;
+      exception when others or query_canceled then
+        get stacked diagnostics error_state = returned_sqlstate, error_message = message_text;
+        error_job := run_due_orders_in_batches.jobs[i];
+        return;
+      end;
+      if batch_processed operator(pg_catalog.>) 0 or pg_catalog.cardinality(batch_failed) operator(pg_catalog.>) 0 then
+        update order_automation.run r
+           set processed = r.processed operator(pg_catalog.+) batch_processed,
+               failed = r.failed operator(pg_catalog.+) pg_catalog.cardinality(batch_failed),
+               max_lateness = greatest(r.max_lateness, batch_lateness)
+         where r.id operator(pg_catalog.=) run_due_orders_in_batches.run_ids[i];
+      end if;
+      commit;
+      exit when pg_catalog.cardinality(batch_failed) operator(pg_catalog.>) 0
+             or batch_processed operator(pg_catalog.<) retry_size;
+    end loop;
+  end loop;
 end $$;
-comment on procedure order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, text[], text, text, text) is
-  'The batch loop of a run: batches of each job in turn (counted in its run row) until every job is drained at as_of or stop_at is reached; stops at the first error, returned in error_*';
+comment on procedure order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, boolean, text, text, text) is
+  'The batch loop of a run: batches of each job in turn (counted in its run row) until every job is drained at as_of or stop_at is reached; then, if retry, batches (of 100 at most) of each job''s failing orders until one fails again; stops at the first error, returned in error_*';
+
 
 create or replace procedure order_automation.run_due_orders(
@@ -354,5 +566,4 @@
   budget interval;
   started pg_catalog.timestamptz := pg_catalog.clock_timestamp();
-  skip_ids pg_catalog.text[] := '{}'::pg_catalog.text[];
   err_job pg_catalog.text;
   err_state pg_catalog.text;
@@ -397,6 +608,6 @@
   if err_state is null then
     call order_automation.run_due_orders_in_batches(array[run_due_orders.job], array[run_id], run_as_of, run_batch_size,
-                                           started operator(pg_catalog.+) budget,
-                                           skip_ids, err_job, err_state, err_message);
+                                           started operator(pg_catalog.+) budget, true,
+                                           err_job, err_state, err_message);
   end if;
 
@@ -413,5 +624,5 @@
 end $$;
 comment on procedure order_automation.run_due_orders(text, timestamptz, integer, bigint) is
-  'Runs one job until nothing is due or max_run_time is spent, committing after each batch; records the run in order_automation.run';
+  'Runs one job until nothing is due or max_run_time is spent, committing after each batch, then retries its failing orders until a batch fails again; records the run in order_automation.run';
 
 create or replace procedure order_automation.cancel_expired_orders(

-- >>> 320_waiter.sql diff
@@ -134,5 +134,4 @@
   first_receipt pg_catalog.timestamptz;
   first_purge pg_catalog.timestamptz;
-  skip_ids pg_catalog.text[] := '{}'::pg_catalog.text[];
   handed_over boolean := false;
   tick_run_done boolean := false;
@@ -206,24 +205,35 @@
         exit passes when serving operator(pg_catalog.<>) jobs or pg_catalog.cardinality(serving) operator(pg_catalog.=) 0;
       end if;
-      -- The earliest open deadline of each job served: an index probe of its partial index (orders
-      -- that failed in this run aside). Each probe is ordered by its deadline and takes the first
-      -- row, so the plan kept for the session walks the index whatever it expects to find (an
+      -- The earliest open deadline of each job served: an index probe of its partial index, which
+      -- leaves out the orders marked failed in that state however many there are (those an app's
+      -- trigger would not let be marked are kept out by a probe of failing_order: offset 0 makes it
+      -- one primary-key probe per order read). Each probe is ordered by its deadline and takes the
+      -- first row, so the plan kept for the session walks the index whatever it expects to find (an
       -- EXISTS, expecting many orders due, would scan the whole table to find none). The state codes
       -- are variables: plan_cache_mode (set below for the session) plans each probe with their
-      -- values, so that it matches the partial index built for those codes.
+      -- values, so that it matches the partial index built for those codes. Failing orders are
+      -- retried by the tick's run only (the next waiting run's), never at each pass.
       select (select o.pay_deadline from public.new_order o
                where 'cancel_expired_orders' operator(pg_catalog.=) any (jobs)
                  and o.state operator(pg_catalog.=) unpaid and o.held_at is null
-                 and o.order_id operator(pg_catalog.<>) all (skip_ids)
+                 and (o.failed_state is null or o.failed_state operator(pg_catalog.<>) unpaid)
+                 and not exists (select from order_automation.failing_order f
+                                  where f.job operator(pg_catalog.=) 'cancel_expired_orders'
+                                    and f.order_id operator(pg_catalog.=) o.order_id offset 0)
                order by o.pay_deadline limit 1),
              (select o.receipt_deadline from public.new_order o
                where 'confirm_shipped_orders' operator(pg_catalog.=) any (jobs)
                  and o.state operator(pg_catalog.=) shipped and o.held_at is null
-                 and o.order_id operator(pg_catalog.<>) all (skip_ids)
+                 and (o.failed_state is null or o.failed_state operator(pg_catalog.<>) shipped)
+                 and not exists (select from order_automation.failing_order f
+                                  where f.job operator(pg_catalog.=) 'confirm_shipped_orders'
+                                    and f.order_id operator(pg_catalog.=) o.order_id offset 0)
                order by o.receipt_deadline limit 1),
              (select o.cancelled_at operator(pg_catalog.+) purge_after from public.new_order o
                where 'purge_cancelled_orders' operator(pg_catalog.=) any (jobs)
                  and o.state operator(pg_catalog.=) cancelled
-                 and o.order_id operator(pg_catalog.<>) all (skip_ids)
+                 and not exists (select from order_automation.failing_order f
+                                  where f.job operator(pg_catalog.=) 'purge_cancelled_orders'
+                                    and f.order_id operator(pg_catalog.=) o.order_id offset 0)
                order by o.cancelled_at limit 1)
         into first_pay, first_receipt, first_purge;
@@ -241,6 +251,6 @@
           commit;
         end if;
-        call order_automation.run_due_orders_in_batches(jobs, run_ids, pass_at, pass_batch_size, until,
-                                               skip_ids, err_job, err_state, err_message);
+        call order_automation.run_due_orders_in_batches(jobs, run_ids, pass_at, pass_batch_size, until, false,
+                                               err_job, err_state, err_message);
         exit passes when err_state is not null;
       end if;
@@ -285,5 +295,5 @@
     jobs := serving;
     if not tick_run_done then
-      -- The tick's run: reminders, then everything due now, finished at once.
+      -- The tick's run: reminders, everything due now, then the failing orders' retries; finished at once.
       tick_run_done := true;
       pass_batch_size := coalesce(run_due_orders_until_tick.batch_size, (select s.batch_size from order_automation.settings s));
@@ -308,6 +318,6 @@
       end loop;
       if err_state is null then
-        call order_automation.run_due_orders_in_batches(jobs, run_ids, pg_catalog.now(), pass_batch_size, until,
-                                               skip_ids, err_job, err_state, err_message);
+        call order_automation.run_due_orders_in_batches(jobs, run_ids, pg_catalog.now(), pass_batch_size, until, true,
+                                               err_job, err_state, err_message);
       end if;
       perform pg_catalog.set_config('lock_timeout', '5s', true);

-- >>> 500_status.sql diff
@@ -31,9 +31,11 @@
   last_processed bigint, last_failed bigint, last_error text,
   due_now bigint, held bigint, next_deadline timestamptz,
-  cron_state text, cron_schedule text, worst_lateness interval
+  cron_state text, cron_schedule text, worst_lateness interval,
+  failing bigint, failing_since timestamptz
 )
 language plpgsql stable
 set search_path = pg_catalog, pg_temp
--- Planned with the state codes' values, so that each count probes its partial index.
+-- Planned with the state codes' values, so that each count probes its partial index (which leaves
+-- out the orders marked failed: those are counted from failing_order).
 set plan_cache_mode = force_custom_plan
 as $$
@@ -47,11 +49,21 @@
            when 'cancel_expired_orders' then
              (select count(*) from public.new_order o
-               where o.state = s.state_unpaid and o.held_at is null and o.pay_deadline <= job_status.at)
+               where o.state = s.state_unpaid and o.held_at is null
+                 and (o.failed_state is null or o.failed_state <> s.state_unpaid)
+                 and o.pay_deadline <= job_status.at
+                 and not exists (select from order_automation.failing_order f
+                                  where f.job = j.job and f.order_id = o.order_id offset 0))
            when 'confirm_shipped_orders' then
              (select count(*) from public.new_order o
-               where o.state = s.state_shipped and o.held_at is null and o.receipt_deadline <= job_status.at)
+               where o.state = s.state_shipped and o.held_at is null
+                 and (o.failed_state is null or o.failed_state <> s.state_shipped)
+                 and o.receipt_deadline <= job_status.at
+                 and not exists (select from order_automation.failing_order f
+                                  where f.job = j.job and f.order_id = o.order_id offset 0))
            when 'purge_cancelled_orders' then
              (select count(*) from public.new_order o
-               where o.state = s.state_cancelled and o.cancelled_at <= job_status.at - s.purge_cancelled_after)
+               where o.state = s.state_cancelled and o.cancelled_at <= job_status.at - s.purge_cancelled_after
+                 and not exists (select from order_automation.failing_order f
+                                  where f.job = j.job and f.order_id = o.order_id offset 0))
          end,
          case j.job
@@ -64,8 +76,12 @@
            when 'cancel_expired_orders' then
              (select min(o.pay_deadline) from public.new_order o
-               where o.state = s.state_unpaid and o.held_at is null and o.pay_deadline > job_status.at)
+               where o.state = s.state_unpaid and o.held_at is null
+                 and (o.failed_state is null or o.failed_state <> s.state_unpaid)
+                 and o.pay_deadline > job_status.at)
            when 'confirm_shipped_orders' then
              (select min(o.receipt_deadline) from public.new_order o
-               where o.state = s.state_shipped and o.held_at is null and o.receipt_deadline > job_status.at)
+               where o.state = s.state_shipped and o.held_at is null
+                 and (o.failed_state is null or o.failed_state <> s.state_shipped)
+                 and o.receipt_deadline > job_status.at)
          end,
          -- NULL: pg_cron lives in another database, where the caller reads it.
@@ -79,11 +95,26 @@
          -- processed ahead of their deadline (a run with an as_of ahead of now) count as on time.
          (select case when max(x.max_lateness) < interval '0' then interval '0' else max(x.max_lateness) end
-            from (select r.max_lateness from order_automation.run r where r.job = j.job order by r.id desc limit 60) x)
+            from (select r.max_lateness from order_automation.run r where r.job = j.job order by r.id desc limit 60) x),
+         -- The orders the job is failing to process, still in the state it moves orders from (the rows
+         -- of those that left it go when the retries reach them).
+         case when j.job in ('cancel_expired_orders', 'confirm_shipped_orders', 'purge_cancelled_orders')
+              then f.failing end,
+         f.failing_since
     from order_automation.job j
     cross join (select order_automation.cron_schema() as pg_cron) here
     left join order_automation.pg_cron_jobs() c on c.job = j.job
     left join lateral (select * from order_automation.run r where r.job = j.job order by r.id desc limit 1) r on true
+    -- One primary-key probe per failing order (offset 0), never a scan of new_order.
+    left join lateral (select count(*) as failing, min(x.first_failed_at) as failing_since
+                         from order_automation.failing_order x
+                        where x.job = j.job
+                          and exists (select from public.new_order o
+                                       where o.order_id = x.order_id
+                                         and o.state = case j.job when 'cancel_expired_orders' then s.state_unpaid
+                                                                  when 'confirm_shipped_orders' then s.state_shipped
+                                                                  else s.state_cancelled end
+                                       offset 0)) f on true
    order by j.job;
 end $$;
 comment on function order_automation.job_status(timestamptz) is
-  'Per job: schedule, active, last run (start, end, orders processed, failures, error), orders due at `at`, orders held, the next deadline after it, its state in pg_cron (active, paused, missing, not scheduled; NULL when pg_cron lives in another database), and the worst lateness of its last 60 runs';
+  'Per job: schedule, active, last run (start, end, orders processed, failures, error), orders due at `at` (failing ones aside), orders held, the next deadline after it, its state in pg_cron (active, paused, missing, not scheduled; NULL when pg_cron lives in another database), the worst lateness of its last 60 runs, and the orders it is failing to process (order_automation.failing_order: how many, the first failure)';

-- >>> 600_privileges.sql diff
@@ -69,4 +69,7 @@
     grant select, insert, update, delete on order_automation.run to order_automation_admin;
     grant select, insert on order_automation.order_failure to order_automation_admin;
+    -- Read by the due scans and the status; written only by the owner's routines (process_batch,
+    -- retry_failing_batch): a row deleted by hand would leave its order out of the scans for good.
+    grant select on order_automation.failing_order to order_automation_admin;
     -- Read only: pg_cron's commands are fixed by job_command(), and schedules change through set_schedule().
     grant select on order_automation.job, order_automation.order_event to order_automation_admin;
@@ -77,5 +80,5 @@
       order_automation.purge_history(bigint),
       order_automation.run_due_orders(text, timestamptz, integer, bigint),
-      order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, text[], text, text, text),
+      order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, boolean, text, text, text),
       order_automation.run_due_orders_until_tick(text, integer, bigint)
       to order_automation_admin;
@@ -84,4 +87,6 @@
       order_automation.process_due_batch(text, timestamptz, integer, bigint, text[]),
       order_automation.process_orders(text, text[]),
+      order_automation.process_batch(text, text[], bigint, boolean),
+      order_automation.retry_failing_batch(text, timestamptz, integer, bigint),
       order_automation.remind_due_soon(text, timestamptz, bigint, integer),
       -- The waiter: a run started on a connection named pg_cron waits for deadlines, whoever calls it.
