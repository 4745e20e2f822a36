-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0006_precision.ts. Never edit.

-- >>> 020_automation_schema.sql recorded sha256:235bd2c951d75d939a01ec983797e32fb9ece0bcc63f5a01dc9b7e6b154df33c

-- >>> 300_due_orders.sql diff
@@ -49,5 +49,7 @@
   'Locks and returns up to batch_size orders a job must process at as_of (held orders never are), skipping skip_ids and rows locked by others';
 
-create or replace function order_automation.process_orders(job text, ids text[]) returns bigint
+create or replace function order_automation.process_orders(
+  job text, ids text[], out processed bigint, out max_lateness interval
+)
 language plpgsql
 -- As the package's owner: only this code path may claim the jobs' causes (order_automation.job_claim).
@@ -58,17 +60,23 @@
 as $$
 declare
-  n bigint;
   s order_automation.settings := (select x from order_automation.settings x);
 begin
-  -- Set-based: the lifecycle triggers book the whole set in one pass.
+  -- Set-based: the lifecycle triggers book the whole set in one pass. The same statement measures
+  -- how late after its deadline each order was processed.
   case process_orders.job
     when 'cancel_expired_orders' then
       perform order_automation.claim_cause('payment_timeout');
-      update public.new_order o set state = s.state_cancelled, cancelled_at = now()
-       where o.order_id = any (process_orders.ids) and o.state = s.state_unpaid and o.held_at is null;
+      with done as (
+        update public.new_order o set state = s.state_cancelled, cancelled_at = now()
+         where o.order_id = any (process_orders.ids) and o.state = s.state_unpaid and o.held_at is null
+        returning o.cancelled_at - o.pay_deadline as lateness)
+      select count(*), max(done.lateness) into processed, max_lateness from done;
     when 'confirm_shipped_orders' then
       perform order_automation.claim_cause('receipt_timeout');
-      update public.new_order o set state = s.state_received, received_at = now()
-       where o.order_id = any (process_orders.ids) and o.state = s.state_shipped and o.held_at is null;
+      with done as (
+        update public.new_order o set state = s.state_received, received_at = now()
+         where o.order_id = any (process_orders.ids) and o.state = s.state_shipped and o.held_at is null
+        returning o.received_at - o.receipt_deadline as lateness)
+      select count(*), max(done.lateness) into processed, max_lateness from done;
     when 'purge_cancelled_orders' then
       perform order_automation.claim_cause('purge_cancelled_orders');
@@ -77,15 +85,14 @@
          and o.order_id = d.order_id and o.state = s.state_cancelled;
       delete from public.new_order o where o.order_id = any (process_orders.ids) and o.state = s.state_cancelled;
+      get diagnostics processed = row_count;
   end case;
-  get diagnostics n = row_count;
   perform order_automation.claim_cause(null);
-  return n;
 end $$;
 comment on function order_automation.process_orders(text, text[]) is
-  'Applies a job to orders due_orders() locked: cancel (unpaid ones), confirm (shipped ones), or delete (cancelled ones), none of them held; returns how many';
+  'Applies a job to orders due_orders() locked: cancel (unpaid ones), confirm (shipped ones), or delete (cancelled ones), none of them held; returns how many, and the latest after its deadline that one was processed';
 
 create or replace function order_automation.process_due_batch(
   job text, as_of timestamptz, batch_size integer, run_id bigint, skip_ids text[],
-  out processed bigint, out failed text[]
+  out processed bigint, out failed text[], out max_lateness interval
 )
 language plpgsql
@@ -99,4 +106,6 @@
                                             process_due_batch.batch_size, process_due_batch.skip_ids);
   one text;
+  one_processed bigint;
+  one_lateness interval;
   err_state text;
   err_message text;
@@ -108,5 +117,6 @@
   end if;
   begin
-    processed := order_automation.process_orders(process_due_batch.job, ids);
+    select p.processed, p.max_lateness into processed, max_lateness
+      from order_automation.process_orders(process_due_batch.job, ids) p;
     return;
   exception
@@ -137,5 +147,8 @@
   foreach one in array ids loop
     begin
-      processed := processed + order_automation.process_orders(process_due_batch.job, array[one]);
+      select p.processed, p.max_lateness into one_processed, one_lateness
+        from order_automation.process_orders(process_due_batch.job, array[one]) p;
+      processed := processed + one_processed;
+      max_lateness := greatest(max_lateness, one_lateness);
     exception
       when lock_not_available or deadlock_detected then raise;
@@ -149,5 +162,5 @@
 end $$;
 comment on function order_automation.process_due_batch(text, timestamptz, integer, bigint, text[]) is
-  'One batch of a run: processes up to batch_size due orders not in skip_ids; returns how many, and the orders that failed (recorded in order_failure)';
+  'One batch of a run: processes up to batch_size due orders not in skip_ids; returns how many, the orders that failed (recorded in order_failure), and the latest after its deadline that one was processed';
 
 create or replace function order_automation.remind_due_soon(
@@ -273,11 +286,61 @@
   'Marks the orders ids (locked by remind_due_soon) reminded in state soon_state and writes their due-soon events; returns how many';
 
--- The driver commits after every batch, and a procedure with a SET clause cannot COMMIT: so it has
--- none. Everything in it is therefore written so that the caller's search_path cannot reach it:
--- functions and operators schema-qualified (OPERATOR(pg_catalog.x); BETWEEN and IN expand to
+-- The drivers commit after every batch, and a procedure with a SET clause cannot COMMIT: so they
+-- have none. Everything in them is therefore written so that the caller's search_path cannot reach
+-- it: functions and operators schema-qualified (OPERATOR(pg_catalog.x); BETWEEN and IN expand to
 -- unqualified operators, so they are not used), types either SQL keywords (bigint, integer,
 -- interval, boolean) or qualified (pg_catalog.text, pg_catalog.timestamptz), no record variable.
--- It cannot SET lock_timeout either: it sets it at the start of each of its transactions, so a lock
--- held forever on one of the package's tables ends the run instead of hanging the schedule.
+-- They cannot SET lock_timeout either: they set it at the start of each of their transactions, so a
+-- lock held forever on one of the package's tables ends the run instead of hanging the schedule.
+create or replace procedure order_automation.run_due_orders_in_batches(
+  jobs text[], run_ids bigint[], as_of timestamptz, batch_size integer, stop_at timestamptz,
+  inout skip_ids text[], inout error_job text, inout error_state text, inout error_message text
+)
+language plpgsql
+as $$
+declare
+  draining boolean[] := pg_catalog.array_fill(true, array[pg_catalog.cardinality(run_due_orders_in_batches.jobs)]);
+  batch_processed bigint;
+  batch_failed pg_catalog.text[];
+  batch_lateness interval;
+begin
+  -- One batch of each job in turn, so that a backlog of one job never holds the other's deadlines
+  -- back; a commit after each batch.
+  <<rounds>>
+  while true operator(pg_catalog.=) any (draining) loop
+    for i in 1 .. pg_catalog.cardinality(run_due_orders_in_batches.jobs) loop
+      continue when not draining[i];
+      perform pg_catalog.set_config('lock_timeout', '5s', true);
+      begin
+        select b.processed, b.failed, b.max_lateness into batch_processed, batch_failed, batch_lateness
+          from order_automation.process_due_batch(
+                 run_due_orders_in_batches.jobs[i], run_due_orders_in_batches.as_of, run_due_orders_in_batches.batch_size,
+                 run_due_orders_in_batches.run_ids[i], run_due_orders_in_batches.skip_ids) b;
+      -- query_canceled too (a cancel request, a caller's statement_timeout): the run records it, then re-raises.
+      exception when others or query_canceled then
+        get stacked diagnostics error_state = returned_sqlstate, error_message = message_text;
+        error_job := run_due_orders_in_batches.jobs[i];
+        return;
+      end;
+      -- Nothing done, nothing written: a pass that finds nothing due costs no WAL.
+      if batch_processed operator(pg_catalog.>) 0 or pg_catalog.cardinality(batch_failed) operator(pg_catalog.>) 0 then
+        skip_ids := skip_ids operator(pg_catalog.||) batch_failed;
+        update order_automation.run r
+           set processed = r.processed operator(pg_catalog.+) batch_processed,
+               failed = r.failed operator(pg_catalog.+) pg_catalog.cardinality(batch_failed),
+               max_lateness = greatest(r.max_lateness, batch_lateness)
+         where r.id operator(pg_catalog.=) run_due_orders_in_batches.run_ids[i];
+      end if;
+      commit;
+      -- A short batch means nothing else is due (or it is locked by another run, which will do it).
+      draining[i] := batch_processed operator(pg_catalog.+) pg_catalog.cardinality(batch_failed)
+                     operator(pg_catalog.>=) run_due_orders_in_batches.batch_size;
+      exit rounds when pg_catalog.clock_timestamp() operator(pg_catalog.>=) run_due_orders_in_batches.stop_at;
+    end loop;
+  end loop;
+end $$;
+comment on procedure order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, text[], text, text, text) is
+  'The batch loop of a run: batches of each job in turn (counted in its run row) until every job is drained at as_of or stop_at is reached; stops at the first error, returned in error_*';
+
 create or replace procedure order_automation.run_due_orders(
   job text, as_of timestamptz, batch_size integer, inout processed bigint
@@ -292,7 +355,5 @@
   started pg_catalog.timestamptz := pg_catalog.clock_timestamp();
   skip_ids pg_catalog.text[] := '{}'::pg_catalog.text[];
-  batch_processed bigint;
-  batch_failed pg_catalog.text[];
-  failed_count bigint := 0;
+  err_job pg_catalog.text;
   err_state pg_catalog.text;
   err_message pg_catalog.text;
@@ -334,33 +395,16 @@
   end;
   commit;
-  loop
-    exit when err_state is not null;
-    perform pg_catalog.set_config('lock_timeout', '5s', true);
-    begin
-      select b.processed, b.failed into batch_processed, batch_failed
-        from order_automation.process_due_batch(run_due_orders.job, run_as_of, run_batch_size, run_id, skip_ids) b;
-    -- query_canceled too (a cancel request, a caller's statement_timeout): the run records it, then re-raises.
-    exception when others or query_canceled then
-      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
-    end;
-    exit when err_state is not null;
-    processed := processed operator(pg_catalog.+) batch_processed;
-    failed_count := failed_count operator(pg_catalog.+) pg_catalog.cardinality(batch_failed);
-    skip_ids := skip_ids operator(pg_catalog.||) batch_failed;
-    update order_automation.run r
-       set processed = run_due_orders.processed, failed = failed_count
-     where r.id operator(pg_catalog.=) run_id;
-    commit;
-    -- A short batch means nothing else is due (or it is locked by another run, which will do it).
-    exit when batch_processed operator(pg_catalog.+) pg_catalog.cardinality(batch_failed) operator(pg_catalog.<) run_batch_size;
-    exit when pg_catalog.clock_timestamp() operator(pg_catalog.-) started operator(pg_catalog.>=) budget;
-  end loop;
+  if err_state is null then
+    call order_automation.run_due_orders_in_batches(array[run_due_orders.job], array[run_id], run_as_of, run_batch_size,
+                                           started operator(pg_catalog.+) budget,
+                                           skip_ids, err_job, err_state, err_message);
+  end if;
 
   perform pg_catalog.set_config('lock_timeout', '5s', true);
   update order_automation.run r
-     set finished_at = pg_catalog.clock_timestamp(), processed = run_due_orders.processed,
-         failed = failed_count,
+     set finished_at = pg_catalog.clock_timestamp(),
          error = case when err_state is not null then pg_catalog.format('%s (SQLSTATE %s)', err_message, err_state) end
-   where r.id operator(pg_catalog.=) run_id;
+   where r.id operator(pg_catalog.=) run_id
+  returning r.processed into processed;
   commit;
   if err_state is not null then
@@ -379,4 +423,12 @@
   purged bigint;
 begin
+  -- pg_cron's run waits for deadlines until just past its next tick; any other is one pass, and so
+  -- is pg_cron's when the waiter's locks are held by another role (cancelled NULL).
+  if order_automation.run_waits(cancel_expired_orders.as_of) then
+    call order_automation.run_due_orders_until_tick('cancel_expired_orders', cancel_expired_orders.batch_size, cancelled);
+    if cancelled is not null then
+      return;
+    end if;
+  end if;
   call order_automation.run_due_orders('cancel_expired_orders', cancel_expired_orders.as_of,
                                        cancel_expired_orders.batch_size, cancelled);
@@ -388,5 +440,5 @@
 end $$;
 comment on procedure order_automation.cancel_expired_orders(timestamptz, integer, bigint) is
-  'Cancels every unpaid order with pay_deadline <= as_of (default now): books back on the shelf. Returns cancelled. Call it outside a transaction block: it commits after each batch';
+  'Cancels every unpaid order with pay_deadline <= as_of (default now): books back on the shelf. Returns cancelled. Call it outside a transaction block: it commits after each batch. Run by pg_cron, it waits for deadlines until just past its next tick (setting precision)';
 
 create or replace procedure order_automation.confirm_shipped_orders(
@@ -396,9 +448,17 @@
 as $$
 begin
+  -- pg_cron's run waits for deadlines until just past its next tick; any other is one pass, and so
+  -- is pg_cron's when the waiter's locks are held by another role (confirmed NULL).
+  if order_automation.run_waits(confirm_shipped_orders.as_of) then
+    call order_automation.run_due_orders_until_tick('confirm_shipped_orders', confirm_shipped_orders.batch_size, confirmed);
+    if confirmed is not null then
+      return;
+    end if;
+  end if;
   call order_automation.run_due_orders('confirm_shipped_orders', confirm_shipped_orders.as_of,
                                        confirm_shipped_orders.batch_size, confirmed);
 end $$;
 comment on procedure order_automation.confirm_shipped_orders(timestamptz, integer, bigint) is
-  'Marks received every shipped order with receipt_deadline <= as_of (default now): sellers are paid. Returns confirmed. Call it outside a transaction block: it commits after each batch';
+  'Marks received every shipped order with receipt_deadline <= as_of (default now): sellers are paid. Returns confirmed. Call it outside a transaction block: it commits after each batch. Run by pg_cron, it waits for deadlines until just past its next tick (setting precision)';
 
 create or replace procedure order_automation.purge_cancelled_orders(

-- >>> 320_waiter.sql diff
@@ -0,0 +1,332 @@
+-- Deadline precision from a minute schedule: the run pg_cron starts waits for deadlines until just
+-- past the next tick, and one such waiter per database serves both jobs on one connection.
+--
+-- Who waits: each run computes the tick it covers up to (the next minute) and takes the session
+-- advisory lock (424201, that tick's minute number): a run whose tick is taken already (the other
+-- job's tick, or pg_cron's queued run of the same job) returns at once. Then it takes the waiter lock
+-- (424201, 0); while the previous tick's waiter holds it, the new run waits, and the old waiter, once
+-- past its own tick, sees the new run's lock and hands over within one sleep slice. A waiter nobody
+-- relieves stops two seconds past its tick, and pg_cron starts the run it queued meanwhile.
+-- Advisory locks are open to every role that may connect: one held by any other role than the
+-- installer's (the jobs' owner) is not a waiter, and the run then makes one pass as if it waited not
+-- at all. Squatting the locks costs the shop its precision, never its automation.
+-- The run log reads as before: the pass at the tick is a run of each job, finished at once; the
+-- waiting after it is another, recorded only once it has orders to process.
+
+create or replace function order_automation.run_waits(as_of timestamptz) returns boolean
+language plpgsql stable
+set search_path = pg_catalog, pg_temp
+set lock_timeout = '5s'
+as $$
+begin
+  -- A run with an as_of is one pass; so is any run but pg_cron's, which reads no setting here (a
+  -- lock on the settings then holds up only the run that needs them). pg_cron names its connections
+  -- pg_cron (fallback_application_name); with background workers (cron.use_background_workers) the
+  -- backend type is pg_cron.
+  if run_waits.as_of is not null
+     or (current_setting('application_name') <> 'pg_cron'
+         and (select a.backend_type from pg_stat_get_activity(pg_backend_pid()) a) is distinct from 'pg_cron') then
+    return false;
+  end if;
+  return (select s.precision < interval '1 minute' from order_automation.settings s);
+end $$;
+comment on function order_automation.run_waits(timestamptz) is
+  'True for the run of a job that pg_cron started (as_of NULL) while precision is under a minute: it then waits for deadlines until just past the next tick';
+
+create or replace function order_automation.waiter_plan(out tick integer, out tick_at timestamptz, out until timestamptz)
+language plpgsql
+set search_path = pg_catalog, pg_temp
+as $$
+declare
+  timeout interval := current_setting('statement_timeout')::interval;
+begin
+  -- Minute ticks are the same instants in every time zone pg_cron may use.
+  tick := floor(extract(epoch from clock_timestamp()) / 60)::integer + 1;
+  tick_at := to_timestamp(tick::bigint * 60);
+  -- Two seconds past the tick: long enough that pg_cron has seen the run still going at its tick,
+  -- and queued the next one, whose start then follows this run's end at once.
+  until := tick_at + interval '2 seconds';
+  -- The CALL is one statement, whatever it commits: a statement_timeout would cancel it. End before.
+  if timeout > interval '0' then
+    until := least(until, statement_timestamp() + timeout - interval '2 seconds');
+  end if;
+end $$;
+comment on function order_automation.waiter_plan() is
+  'For a waiting run starting now: the next minute tick (its minute number and time) and when the run stops, just past it (or before a statement_timeout)';
+
+create or replace function order_automation.start_runs(jobs text[], batch_size integer) returns bigint[]
+language sql
+set search_path = pg_catalog, pg_temp
+set lock_timeout = '5s'
+as $$
+  with started as (
+    insert into order_automation.run (job, as_of, batch_size)
+    select j.job, now(), start_runs.batch_size from unnest(start_runs.jobs) with ordinality j(job, n) order by j.n
+    returning id, job)
+  select array_agg(s.id order by array_position(start_runs.jobs, s.job)) from started s
+$$;
+comment on function order_automation.start_runs(text[], integer) is
+  'Records the start of a run of a waiting run: one run row per job it serves; returns their ids, in the order of jobs';
+
+create or replace function order_automation.finish_runs(run_ids bigint[], error text, job text) returns bigint
+language sql
+set search_path = pg_catalog, pg_temp
+set lock_timeout = '5s'
+as $$
+  with finished as (
+    update order_automation.run r set finished_at = clock_timestamp(), error = finish_runs.error
+     where r.id = any (finish_runs.run_ids)
+    returning r.job, r.processed)
+  select coalesce(sum(f.processed) filter (where f.job = finish_runs.job), 0)::bigint from finished f
+$$;
+comment on function order_automation.finish_runs(bigint[], text, text) is
+  'Records the end of a run of a waiting run (and its error, if any) in its rows; returns how many orders it processed for job';
+
+create or replace function order_automation.waiter_lock_ours(key integer) returns boolean
+language sql stable
+set search_path = pg_catalog, pg_temp
+as $$
+  select exists (
+    select from pg_locks l join pg_stat_activity a on a.pid = l.pid
+     where l.locktype = 'advisory' and l.granted and l.objsubid = 2
+       and l.database = (select d.oid from pg_database d where d.datname = current_database())
+       and l.classid = 424201::oid and l.objid::bigint = waiter_lock_ours.key
+       and a.usesysid = (select r.oid from pg_roles r where r.rolname = current_user))
+$$;
+comment on function order_automation.waiter_lock_ours(integer) is
+  'True when the waiter''s advisory lock (424201, key) is held by a session of the current role (a run of the installer''s jobs), not by some other role';
+
+create or replace function order_automation.successor_waiting(tick integer) returns boolean
+language plpgsql
+set search_path = pg_catalog, pg_temp
+as $$
+begin
+  return exists (
+    select from pg_locks l
+     where l.locktype = 'advisory' and l.granted and l.objsubid = 2
+       and l.database = (select d.oid from pg_database d where d.datname = current_database())
+       and l.classid = 424201::oid and l.objid::bigint > successor_waiting.tick);
+end $$;
+comment on function order_automation.successor_waiting(integer) is
+  'True when the run of a later tick than tick is waiting to take over as this database''s waiter';
+
+create or replace procedure order_automation.run_due_orders_until_tick(job text, batch_size integer, inout processed bigint)
+language plpgsql
+as $$
+declare
+  tick integer;
+  tick_at pg_catalog.timestamptz;
+  until pg_catalog.timestamptz;
+  jobs pg_catalog.text[];
+  run_ids bigint[];
+  pass_at pg_catalog.timestamptz;
+  pass_batch_size integer;
+  wake pg_catalog.timestamptz;
+  due boolean;
+  serving pg_catalog.text[];
+  pass_precision interval;
+  unpaid smallint;
+  shipped smallint;
+  cancelled smallint;
+  purge_after interval;
+  recheck_at pg_catalog.timestamptz := '-infinity'::pg_catalog.timestamptz;
+  first_pay pg_catalog.timestamptz;
+  first_receipt pg_catalog.timestamptz;
+  first_purge pg_catalog.timestamptz;
+  skip_ids pg_catalog.text[] := '{}'::pg_catalog.text[];
+  handed_over boolean := false;
+  tick_run_done boolean := false;
+  err_job pg_catalog.text;
+  err_state pg_catalog.text;
+  err_message pg_catalog.text;
+  remind_state pg_catalog.text;
+  remind_message pg_catalog.text;
+  plan_mode pg_catalog.text := pg_catalog.current_setting('plan_cache_mode');
+begin
+  processed := 0;
+  if run_due_orders_until_tick.batch_size operator(pg_catalog.<) 1
+     or run_due_orders_until_tick.batch_size operator(pg_catalog.>) 1000000 then
+    raise exception using errcode = 'OA006',
+      message = pg_catalog.format('batch_size must be between 1 and 1000000, not %s', run_due_orders_until_tick.batch_size);
+  end if;
+  select p.tick, p.tick_at, p.until into tick, tick_at, until from order_automation.waiter_plan() p;
+  -- This tick is covered already: by the other job's run, or by this job's, queued by pg_cron.
+  -- Held by another role, it covers nothing: processed NULL tells the caller to make one pass.
+  if not pg_catalog.pg_try_advisory_lock(424201, tick) then
+    if not order_automation.waiter_lock_ours(tick) then
+      processed := null;
+    end if;
+    return;
+  end if;
+  -- Take over from the previous tick's waiter, which ends once it sees this run's lock. A lock that
+  -- is not a waiter's, or a waiter that does not end, leaves this run one pass.
+  while not pg_catalog.pg_try_advisory_lock(424201, 0) loop
+    commit;
+    if pg_catalog.clock_timestamp() operator(pg_catalog.>=) until or not order_automation.waiter_lock_ours(0) then
+      perform pg_catalog.pg_advisory_unlock(424201, tick);
+      processed := null;
+      return;
+    end if;
+    perform pg_catalog.pg_sleep(0.05);
+  end loop;
+  perform pg_catalog.set_config('plan_cache_mode', 'force_custom_plan', false);
+  commit;
+
+  -- First, at the tick, a pass recorded as a run of each job, as a one-pass run records it (the run
+  -- log and the status read as they always did: a run per tick). The waiting that follows records a
+  -- run of each job only once it has orders to process; it ends when the waiter stops, or when the
+  -- jobs to serve change (one paused or resumed), and a new one starts when there is work again.
+  -- The first pass finds which jobs to serve (its probes of no job read nothing).
+  jobs := '{}'::pg_catalog.text[];
+  run_ids := '{}'::bigint[];
+  <<serving>>
+  loop
+    <<passes>>
+    loop
+      exit passes when err_state is not null;
+      pass_at := pg_catalog.clock_timestamp();
+      -- The settings and the jobs to serve, every few seconds: a pass that reads only the order
+      -- table costs a third as much, and waiting costs what its passes cost. Active jobs only:
+      -- pausing one stops its waiting too. Purging at once (purge_cancelled_after = 0) follows the
+      -- cancellations, as a one-pass run purges after cancelling.
+      if pass_at operator(pg_catalog.>=) recheck_at then
+        select s.precision, s.purge_cancelled_after, s.state_unpaid, s.state_shipped, s.state_cancelled,
+               (select coalesce(pg_catalog.array_agg(j.job order by j.job), '{}'::pg_catalog.text[])
+                  from order_automation.job j
+                 where j.active
+                   and (j.job operator(pg_catalog.=) any ('{cancel_expired_orders,confirm_shipped_orders}'::pg_catalog.text[])
+                        or (j.job operator(pg_catalog.=) 'purge_cancelled_orders'
+                            and s.purge_cancelled_after operator(pg_catalog.=) interval '0'
+                            and exists (select from order_automation.job c
+                                         where c.job operator(pg_catalog.=) 'cancel_expired_orders' and c.active))))
+          into pass_precision, purge_after, unpaid, shipped, cancelled, serving
+          from order_automation.settings s;
+        recheck_at := pass_at operator(pg_catalog.+) interval '5 seconds';
+        -- A job paused or resumed: the runs end, and new ones start for the jobs to serve now.
+        exit passes when serving operator(pg_catalog.<>) jobs or pg_catalog.cardinality(serving) operator(pg_catalog.=) 0;
+      end if;
+      -- The earliest open deadline of each job served: an index probe of its partial index (orders
+      -- that failed in this run aside). Each probe is ordered by its deadline and takes the first
+      -- row, so the plan kept for the session walks the index whatever it expects to find (an
+      -- EXISTS, expecting many orders due, would scan the whole table to find none). The state codes
+      -- are variables: plan_cache_mode (set below for the session) plans each probe with their
+      -- values, so that it matches the partial index built for those codes.
+      select (select o.pay_deadline from public.new_order o
+               where 'cancel_expired_orders' operator(pg_catalog.=) any (jobs)
+                 and o.state operator(pg_catalog.=) unpaid and o.held_at is null
+                 and o.order_id operator(pg_catalog.<>) all (skip_ids)
+               order by o.pay_deadline limit 1),
+             (select o.receipt_deadline from public.new_order o
+               where 'confirm_shipped_orders' operator(pg_catalog.=) any (jobs)
+                 and o.state operator(pg_catalog.=) shipped and o.held_at is null
+                 and o.order_id operator(pg_catalog.<>) all (skip_ids)
+               order by o.receipt_deadline limit 1),
+             (select o.cancelled_at operator(pg_catalog.+) purge_after from public.new_order o
+               where 'purge_cancelled_orders' operator(pg_catalog.=) any (jobs)
+                 and o.state operator(pg_catalog.=) cancelled
+                 and o.order_id operator(pg_catalog.<>) all (skip_ids)
+               order by o.cancelled_at limit 1)
+        into first_pay, first_receipt, first_purge;
+      due := coalesce(least(first_pay, first_receipt, first_purge) operator(pg_catalog.<=) pass_at, false);
+      -- The next pass: at the next deadline; at least once per precision, for deadlines moved or
+      -- orders placed meanwhile; and a tenth of the precision after this one at the soonest, so that
+      -- a stream of deadlines (or orders due that another transaction holds) is taken in batches.
+      wake := least(greatest(least(first_pay, first_receipt, pass_at operator(pg_catalog.+) pass_precision),
+                             pass_at operator(pg_catalog.+) (pass_precision operator(pg_catalog./) 10)),
+                    until);
+      if due then
+        pass_batch_size := coalesce(run_due_orders_until_tick.batch_size, (select s.batch_size from order_automation.settings s));
+        if pg_catalog.cardinality(run_ids) operator(pg_catalog.=) 0 then
+          run_ids := order_automation.start_runs(jobs, pass_batch_size);
+          commit;
+        end if;
+        call order_automation.run_due_orders_in_batches(jobs, run_ids, pass_at, pass_batch_size, until,
+                                               skip_ids, err_job, err_state, err_message);
+        exit passes when err_state is not null;
+      end if;
+      exit passes when pg_catalog.clock_timestamp() operator(pg_catalog.>=) until;
+      -- Sleep in slices, each its own transaction.
+      loop
+        commit;
+        exit when pg_catalog.clock_timestamp() operator(pg_catalog.>=) wake;
+        if pg_catalog.clock_timestamp() operator(pg_catalog.>=) tick_at and order_automation.successor_waiting(tick) then
+          handed_over := true;
+          exit passes;
+        end if;
+        -- pg_sleep holds a snapshot, hence the backend's xmin, for as long as it sleeps: slices of at
+        -- most half a second keep VACUUM's horizon moving. (Inline, not a function with a SET
+        -- clause: on this path every statement counts, as the cost of waiting.)
+        begin
+          perform pg_catalog.pg_sleep(least(extract(epoch from wake operator(pg_catalog.-) pg_catalog.clock_timestamp()),
+                                            0.5)::double precision);
+        exception when query_canceled then
+          get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
+          exit passes;
+        end;
+      end loop;
+    end loop;
+
+    perform pg_catalog.set_config('lock_timeout', '5s', true);
+    -- An error while no run was open (a cancel request while waiting, say) is recorded all the same.
+    if err_state is not null and pg_catalog.cardinality(run_ids) operator(pg_catalog.=) 0
+       and pg_catalog.cardinality(jobs) operator(pg_catalog.>) 0 then
+      run_ids := order_automation.start_runs(
+        jobs, coalesce(run_due_orders_until_tick.batch_size, (select s.batch_size from order_automation.settings s)));
+    end if;
+    processed := processed operator(pg_catalog.+) order_automation.finish_runs(
+      run_ids,
+      case when err_state is not null then pg_catalog.format('%s (SQLSTATE %s)', err_message, err_state) end,
+      run_due_orders_until_tick.job);
+    commit;
+    run_ids := '{}'::bigint[];
+    exit serving when err_state is not null or handed_over
+                   or pg_catalog.clock_timestamp() operator(pg_catalog.>=) until
+                   or pg_catalog.cardinality(serving) operator(pg_catalog.=) 0;
+    jobs := serving;
+    if not tick_run_done then
+      -- The tick's run: reminders, then everything due now, finished at once.
+      tick_run_done := true;
+      pass_batch_size := coalesce(run_due_orders_until_tick.batch_size, (select s.batch_size from order_automation.settings s));
+      run_ids := order_automation.start_runs(jobs, pass_batch_size);
+      commit;
+      -- Reminders are a side step, as in a one-pass run: remind_due_soon records its own failures
+      -- and never raises but for a cancel; a failure to call it at all is recorded and the run goes on.
+      for i in 1 .. pg_catalog.cardinality(jobs) loop
+        perform pg_catalog.set_config('lock_timeout', '5s', true);
+        begin
+          perform order_automation.remind_due_soon(jobs[i], pg_catalog.now(), run_ids[i], pass_batch_size);
+        exception
+          when query_canceled then
+            get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
+          when others then
+            get stacked diagnostics remind_state = returned_sqlstate, remind_message = message_text;
+            insert into order_automation.order_failure (run_id, order_id, sqlstate, message, step)
+            values (run_ids[i], null, remind_state, remind_message, 'remind_due_soon');
+        end;
+        commit;
+        exit when err_state is not null;
+      end loop;
+      if err_state is null then
+        call order_automation.run_due_orders_in_batches(jobs, run_ids, pg_catalog.now(), pass_batch_size, until,
+                                               skip_ids, err_job, err_state, err_message);
+      end if;
+      perform pg_catalog.set_config('lock_timeout', '5s', true);
+      processed := processed operator(pg_catalog.+) order_automation.finish_runs(
+        run_ids,
+        case when err_state is not null then pg_catalog.format('%s (SQLSTATE %s)', err_message, err_state) end,
+        run_due_orders_until_tick.job);
+      commit;
+      run_ids := '{}'::bigint[];
+      exit serving when err_state is not null;
+    end if;
+  end loop;
+
+  perform pg_catalog.set_config('plan_cache_mode', plan_mode, false);
+  perform pg_catalog.pg_advisory_unlock(424201, 0);
+  perform pg_catalog.pg_advisory_unlock(424201, tick);
+  if err_state is not null then
+    raise exception using errcode = err_state, message = err_message;
+  end if;
+end $$;
+comment on procedure order_automation.run_due_orders_until_tick(text, integer, bigint) is
+  'pg_cron''s run of cancel_expired_orders or confirm_shipped_orders: this database''s one waiter processes the due orders of every active job at their deadlines (at least once per precision) until just past the next tick; returns how many it processed for job, or NULL when another role holds the waiter''s locks (the caller then makes one pass)';

-- >>> 500_status.sql diff
@@ -31,5 +31,5 @@
   last_processed bigint, last_failed bigint, last_error text,
   due_now bigint, held bigint, next_deadline timestamptz,
-  cron_state text, cron_schedule text
+  cron_state text, cron_schedule text, worst_lateness interval
 )
 language plpgsql stable
@@ -75,5 +75,9 @@
               when c.active then 'active'
               else 'paused' end,
-         c.schedule
+         c.schedule,
+         -- An hour of runs at the default schedule, read backwards through run_job_started. Orders
+         -- processed ahead of their deadline (a run with an as_of ahead of now) count as on time.
+         (select case when max(x.max_lateness) < interval '0' then interval '0' else max(x.max_lateness) end
+            from (select r.max_lateness from order_automation.run r where r.job = j.job order by r.id desc limit 60) x)
     from order_automation.job j
     cross join (select order_automation.cron_schema() as pg_cron) here
@@ -83,3 +87,3 @@
 end $$;
 comment on function order_automation.job_status(timestamptz) is
-  'Per job: schedule, active, last run (start, end, orders processed, failures, error), orders due at `at`, orders held, the next deadline after it, and its state in pg_cron (active, paused, missing, not scheduled; NULL when pg_cron lives in another database)';
+  'Per job: schedule, active, last run (start, end, orders processed, failures, error), orders due at `at`, orders held, the next deadline after it, its state in pg_cron (active, paused, missing, not scheduled; NULL when pg_cron lives in another database), and the worst lateness of its last 60 runs';

-- >>> 600_privileges.sql diff
@@ -74,5 +74,7 @@
       order_automation.purge_cancelled_orders(timestamptz, integer, bigint),
       order_automation.purge_history(bigint),
-      order_automation.run_due_orders(text, timestamptz, integer, bigint)
+      order_automation.run_due_orders(text, timestamptz, integer, bigint),
+      order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, text[], text, text, text),
+      order_automation.run_due_orders_until_tick(text, integer, bigint)
       to order_automation_admin;
     grant execute on function
@@ -81,4 +83,8 @@
       order_automation.process_orders(text, text[]),
       order_automation.remind_due_soon(text, timestamptz, bigint, integer),
+      -- The waiter: a run started on a connection named pg_cron waits for deadlines, whoever calls it.
+      order_automation.run_waits(timestamptz), order_automation.waiter_plan(),
+      order_automation.start_runs(text[], integer), order_automation.finish_runs(bigint[], text, text),
+      order_automation.waiter_lock_ours(integer), order_automation.successor_waiting(integer),
       order_automation.cron_jobname(text), order_automation.cron_schema(), order_automation.cron_database(),
       order_automation.job_status(timestamptz), order_automation.pg_cron_jobs(),
