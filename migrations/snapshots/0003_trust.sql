-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0003_trust.ts. Never edit.

-- >>> 010_bookstore.sql recorded sha256:cba349337113965de796630c6fee7b758bfd74f23620acdb1ce2cf1424a0de8f

-- >>> 020_automation_schema.sql recorded sha256:d76552edfb58a017395810506c0af9466a9d92c502ebf86e0e11cf6f599ca604

-- >>> 100_order_lifecycle.sql diff
@@ -1,13 +1,45 @@
--- The order lifecycle on new_order (SPEC §3): a guard that refuses illegal state changes and the
+-- The order lifecycle on new_order: a guard that refuses illegal state changes and the
 -- set-based bookkeeping of each change (money, stock, history), the same for every writer.
+-- Trigger names carry a number because PostgreSQL fires the triggers of one event in name order:
+-- _050_ before _100_ before _900_ (guards first, bookkeeping and history last).
 
 -- Which writer changed an order: package routines set order_automation.cause for their transaction;
--- a plain UPDATE by an app is recorded as 'sql'.
+-- a plain UPDATE by an app is recorded as 'sql'. Any session can set that setting, so the causes of
+-- the package's own jobs are believed only with a claim in order_automation.job_claim, which only
+-- the jobs' own code path (process_orders, running as the package's owner) can write.
 create or replace function order_automation.current_cause() returns text
-language sql stable
+language plpgsql volatile
 set search_path = pg_catalog, pg_temp
-as $$ select coalesce(nullif(current_setting('order_automation.cause', true), ''), 'sql') $$;
+as $$
+declare
+  claimed text := coalesce(nullif(current_setting('order_automation.cause', true), ''), 'sql');
+begin
+  if claimed in ('payment_timeout', 'receipt_timeout', 'purge_cancelled_orders')
+     and not exists (select from order_automation.job_claim c
+                      where c.xid = pg_current_xact_id() and c.cause = claimed) then
+    raise exception using errcode = '42501',
+      message = format('the cause %s is recorded only by the package''s own jobs: this change is refused', claimed),
+      hint = 'Run the job (CALL order_automation.cancel_expired_orders(), ...) or record the change under a cause of your own.';
+  end if;
+  return claimed;
+end $$;
 comment on function order_automation.current_cause() is
-  'The cause recorded in order_event for changes made by the current transaction';
+  'The cause recorded in order_event for changes made by the current transaction; refuses a job''s cause the job did not claim';
+
+create or replace function order_automation.claim_cause(cause text) returns void
+language plpgsql
+set search_path = pg_catalog, pg_temp
+as $$
+begin
+  -- Called by the jobs' own routines as the package's owner: a caller without the owner's rights
+  -- cannot write the claim, and so cannot make current_cause() believe a job's cause.
+  delete from order_automation.job_claim c where c.xid = pg_current_xact_id();
+  if claim_cause.cause is not null then
+    insert into order_automation.job_claim (xid, cause) values (pg_current_xact_id(), claim_cause.cause);
+  end if;
+  perform set_config('order_automation.cause', coalesce(claim_cause.cause, ''), true);
+end $$;
+comment on function order_automation.claim_cause(text) is
+  'The package''s jobs claim their cause for the current transaction (NULL: give it back); only the package''s owner can';
 
 create or replace function order_automation.tg_new_order__before_insert() returns trigger

-- >>> 210_order_holds.sql diff
@@ -1,3 +1,3 @@
--- What shops ask for beyond the two rules (SPEC §8): a payment in flight is not cancelled under the
+-- What shops ask for beyond the two rules: a payment in flight is not cancelled under the
 -- buyer, the buyer may push the receipt deadline once, and a disputed order can be held. The four
 -- entry points run as the package's owner, so an app role needs only EXECUTE on them.

-- >>> 300_due_orders.sql diff
@@ -1,3 +1,3 @@
--- The two automations (SPEC §4): cancel unpaid orders past pay_deadline, confirm shipped orders past
+-- The two automations: cancel unpaid orders past pay_deadline, confirm shipped orders past
 -- receipt_deadline. Batches of batch_size, a COMMIT after each, skipping rows others are changing.
 
@@ -48,4 +48,8 @@
 create or replace function order_automation.process_orders(job text, ids text[]) returns bigint
 language plpgsql
+-- As the package's owner: only this code path may claim the jobs' causes (order_automation.job_claim).
+-- Whoever may call it can therefore do no more than the job itself: each statement re-checks the
+-- state the job moves orders from, and skips held orders.
+security definer
 set search_path = pg_catalog, pg_temp
 as $$
@@ -56,20 +60,24 @@
   case process_orders.job
     when 'cancel_expired_orders' then
-      perform set_config('order_automation.cause', 'payment_timeout', true);
-      update public.new_order o set state = 4, cancelled_at = now() where o.order_id = any (process_orders.ids);
+      perform order_automation.claim_cause('payment_timeout');
+      update public.new_order o set state = 4, cancelled_at = now()
+       where o.order_id = any (process_orders.ids) and o.state = 0 and o.held_at is null;
     when 'confirm_shipped_orders' then
-      perform set_config('order_automation.cause', 'receipt_timeout', true);
-      update public.new_order o set state = 3, received_at = now() where o.order_id = any (process_orders.ids);
+      perform order_automation.claim_cause('receipt_timeout');
+      update public.new_order o set state = 3, received_at = now()
+       where o.order_id = any (process_orders.ids) and o.state = 2 and o.held_at is null;
     when 'purge_cancelled_orders' then
-      perform set_config('order_automation.cause', 'purge_cancelled_orders', true);
-      delete from public.new_order_detail d where d.order_id = any (process_orders.ids);
-      delete from public.new_order o where o.order_id = any (process_orders.ids);
+      perform order_automation.claim_cause('purge_cancelled_orders');
+      delete from public.new_order_detail d using public.new_order o
+       where d.order_id = any (process_orders.ids) and o.order_id = any (process_orders.ids)
+         and o.order_id = d.order_id and o.state = 4;
+      delete from public.new_order o where o.order_id = any (process_orders.ids) and o.state = 4;
   end case;
   get diagnostics n = row_count;
-  perform set_config('order_automation.cause', '', true);
+  perform order_automation.claim_cause(null);
   return n;
 end $$;
 comment on function order_automation.process_orders(text, text[]) is
-  'Applies a job to orders due_orders() locked: cancel, confirm, or delete; returns how many';
+  'Applies a job to orders due_orders() locked: cancel (unpaid ones), confirm (shipped ones), or delete (cancelled ones), none of them held; returns how many';
 
 create or replace function order_automation.process_due_batch(
@@ -139,6 +147,11 @@
   'One batch of a run: processes up to batch_size due orders not in skip_ids; returns how many, and the orders that failed (recorded in order_failure)';
 
-create or replace function order_automation.remind_due_soon(job text, as_of timestamptz) returns bigint
+create or replace function order_automation.remind_due_soon(
+  job text, as_of timestamptz, run_id bigint default null, max_orders integer default 500
+) returns bigint
 language plpgsql
+-- As the package's owner: whoever may run the jobs may write their reminders, without any right on
+-- the order history.
+security definer
 set search_path = pg_catalog, pg_temp
 -- Deadlines are instants: '1 day' is 24 hours whatever the caller's TimeZone (no DST shift).
@@ -148,31 +161,75 @@
 declare
   ahead interval := (select s.remind_before from order_automation.settings s);
+  horizon timestamptz;
+  soon_state smallint;
+  ids text[];
+  one text;
   reminded bigint := 0;
+  n bigint;
+  err_state text;
+  err_message text;
 begin
-  if ahead is null or remind_due_soon.job not in ('cancel_expired_orders', 'confirm_shipped_orders') then
+  if ahead is null or remind_due_soon.job is null
+     or remind_due_soon.job not in ('cancel_expired_orders', 'confirm_shipped_orders') then
     return 0;
   end if;
-  -- reminded_state marks the order in the same statement: a concurrent run re-checks it on the
-  -- locked row and writes no second reminder.
-  if remind_due_soon.job = 'cancel_expired_orders' then
-    with soon as (
-      update public.new_order o set reminded_state = 0
-       where o.state = 0 and o.held_at is null
-         and o.pay_deadline > remind_due_soon.as_of and o.pay_deadline <= remind_due_soon.as_of + ahead
-         and o.reminded_state is distinct from 0
-      returning o.order_id, o.pay_deadline as deadline)
-    insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
-    select soon.order_id, 0, 0, 'payment_due_soon', format('pay deadline %s', soon.deadline) from soon;
-  else
-    with soon as (
-      update public.new_order o set reminded_state = 2
-       where o.state = 2 and o.held_at is null
-         and o.receipt_deadline > remind_due_soon.as_of and o.receipt_deadline <= remind_due_soon.as_of + ahead
-         and o.reminded_state is distinct from 2
-      returning o.order_id, o.receipt_deadline as deadline)
-    insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
-    select soon.order_id, 2, 2, 'receipt_due_soon', format('receipt deadline %s', soon.deadline) from soon;
-  end if;
-  get diagnostics reminded = row_count;
+  soon_state := case remind_due_soon.job when 'cancel_expired_orders' then 0 else 2 end;
+  -- A reminder is a side step of the run: best effort. Rows others hold are skipped (reminded by a
+  -- later run), a row that fails is skipped and recorded, at most max_orders are taken per run, and
+  -- nothing here ever fails the run (but a cancel, which the run records).
+  begin
+    begin
+      horizon := remind_due_soon.as_of + ahead;
+    exception when datetime_field_overflow then
+      horizon := 'infinity';  -- so far ahead that every future deadline is near
+    end;
+    if soon_state = 0 then
+      select array_agg(d.order_id) into ids
+        from (select o.order_id from public.new_order o
+               where o.state = 0 and o.held_at is null
+                 and o.pay_deadline > remind_due_soon.as_of and o.pay_deadline <= horizon
+                 and o.reminded_state is distinct from 0
+               order by o.pay_deadline
+               limit greatest(remind_due_soon.max_orders, 1)
+                 for no key update skip locked) d;
+    else
+      select array_agg(d.order_id) into ids
+        from (select o.order_id from public.new_order o
+               where o.state = 2 and o.held_at is null
+                 and o.receipt_deadline > remind_due_soon.as_of and o.receipt_deadline <= horizon
+                 and o.reminded_state is distinct from 2
+               order by o.receipt_deadline
+               limit greatest(remind_due_soon.max_orders, 1)
+                 for no key update skip locked) d;
+    end if;
+    if ids is null then
+      return 0;
+    end if;
+    begin
+      reminded := order_automation.write_reminders(soon_state, ids);
+    exception when others then
+      -- One row broke the set (an app's own trigger raising for it, say): one by one, so only the
+      -- bad ones are skipped and recorded.
+      foreach one in array ids loop
+        begin
+          n := order_automation.write_reminders(soon_state, array[one]);
+          reminded := reminded + n;
+        exception when others then
+          get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
+          if remind_due_soon.run_id is not null then
+            insert into order_automation.order_failure (run_id, order_id, sqlstate, message, step)
+            values (remind_due_soon.run_id, one, err_state, err_message, 'remind_due_soon');
+          end if;
+        end;
+      end loop;
+    end;
+  exception when others then
+    get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
+    if remind_due_soon.run_id is not null then
+      insert into order_automation.order_failure (run_id, order_id, sqlstate, message, step)
+      values (remind_due_soon.run_id, null, err_state, err_message, 'remind_due_soon');
+    end if;
+    return 0;
+  end;
   if reminded > 0 then
     perform pg_notify('order_automation', 'order_event');
@@ -180,6 +237,31 @@
   return reminded;
 end $$;
-comment on function order_automation.remind_due_soon(text, timestamptz) is
-  'Writes, once per order, a payment_due_soon / receipt_due_soon event for orders whose deadline is within remind_before of as_of (not held, not yet due)';
+comment on function order_automation.remind_due_soon(text, timestamptz, bigint, integer) is
+  'Writes, once per order, a payment_due_soon / receipt_due_soon event for up to max_orders orders whose deadline is within remind_before of as_of (not held, not yet due); skips rows others hold, records failing ones under run_id, never raises but a cancel';
+
+create or replace function order_automation.write_reminders(soon_state smallint, ids text[]) returns bigint
+language plpgsql
+set search_path = pg_catalog, pg_temp
+as $$
+declare
+  n bigint;
+begin
+  -- reminded_state marks the order in the same statement: a concurrent run re-checks it on the
+  -- locked row and writes no second reminder.
+  with soon as (
+    update public.new_order o set reminded_state = write_reminders.soon_state
+     where o.order_id = any (write_reminders.ids) and o.state = write_reminders.soon_state
+       and o.reminded_state is distinct from write_reminders.soon_state
+    returning o.order_id, case write_reminders.soon_state when 0 then o.pay_deadline else o.receipt_deadline end as deadline)
+  insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
+  select soon.order_id, write_reminders.soon_state, write_reminders.soon_state,
+         case write_reminders.soon_state when 0 then 'payment_due_soon' else 'receipt_due_soon' end,
+         format(case write_reminders.soon_state when 0 then 'pay deadline %s' else 'receipt deadline %s' end, soon.deadline)
+    from soon;
+  get diagnostics n = row_count;
+  return n;
+end $$;
+comment on function order_automation.write_reminders(smallint, text[]) is
+  'Marks the orders ids (locked by remind_due_soon) reminded in state soon_state and writes their due-soon events; returns how many';
 
 -- The driver commits after every batch, and a procedure with a SET clause cannot COMMIT: so it has
@@ -207,4 +289,6 @@
   err_state pg_catalog.text;
   err_message pg_catalog.text;
+  remind_state pg_catalog.text;
+  remind_message pg_catalog.text;
 begin
   perform pg_catalog.set_config('lock_timeout', '5s', true);
@@ -229,8 +313,15 @@
   perform pg_catalog.set_config('lock_timeout', '5s', true);
   processed := 0;
+  -- Reminders are a side step: remind_due_soon records its own failures and never raises, but a
+  -- cancel (which ends the run, recorded) or a failure to call it at all (recorded, and the run goes on).
   begin
-    perform order_automation.remind_due_soon(run_due_orders.job, run_as_of);
-  exception when others or query_canceled then
-    get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
+    perform order_automation.remind_due_soon(run_due_orders.job, run_as_of, run_id, run_batch_size);
+  exception
+    when query_canceled then
+      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
+    when others then
+      get stacked diagnostics remind_state = returned_sqlstate, remind_message = message_text;
+      insert into order_automation.order_failure (run_id, order_id, sqlstate, message, step)
+      values (run_id, null, remind_state, remind_message, 'remind_due_soon');
   end;
   commit;

-- >>> 400_schedule.sql diff
@@ -1,4 +1,4 @@
--- The pg_cron schedule of the automation (jobs listed in order_automation.job): the installer that
--- (re)creates them idempotently. pg_cron is reached through EXECUTE: it may live in another database.
+-- The pg_cron schedule of the automation (jobs listed in order_automation.job): what each job runs,
+-- where pg_cron lives, the installer that (re)creates the jobs, and schedule control for the admin role.
 
 create or replace function order_automation.cron_jobname(job text) returns text
@@ -9,4 +9,51 @@
   'The pg_cron job name of a job in this database: one name per database, so two databases of a cluster never overwrite each other''s jobs';
 
+create or replace function order_automation.job_command(job text) returns text
+language plpgsql immutable
+set search_path = pg_catalog, pg_temp
+as $$
+begin
+  -- pg_cron runs its command as the installing role: the command is fixed here, per job, and never
+  -- read from anything another role can write.
+  case job_command.job
+    when 'cancel_expired_orders' then return 'CALL order_automation.cancel_expired_orders()';
+    when 'confirm_shipped_orders' then return 'CALL order_automation.confirm_shipped_orders()';
+    when 'purge_cancelled_orders' then return 'CALL order_automation.purge_cancelled_orders()';
+    when 'purge_history' then return 'CALL order_automation.purge_history()';
+    else raise exception using errcode = 'OA006', message = format('unknown job %L: it has no command', job_command.job);
+  end case;
+end $$;
+comment on function order_automation.job_command(text) is
+  'The command pg_cron runs for a job of the package: a fixed CALL of its procedure; OA006 for any other name';
+
+create or replace function order_automation.cron_schema() returns text
+language sql stable
+set search_path = pg_catalog, pg_temp
+-- pg_cron always keeps its objects in schema cron. Only the extension's own schema counts: a schema
+-- named cron that some role created where pg_cron is not installed is never called.
+as $$
+  select 'cron'::text
+   where exists (select from pg_extension e
+                   join pg_depend d on d.refclassid = 'pg_extension'::regclass and d.refobjid = e.oid
+                  where e.extname = 'pg_cron' and d.deptype = 'e'
+                    and d.classid = 'pg_namespace'::regclass
+                    and d.objid = (select n.oid from pg_namespace n where n.nspname = 'cron'))
+$$;
+comment on function order_automation.cron_schema() is
+  'cron when the pg_cron extension is created in this database (its schema cron), NULL otherwise';
+
+create or replace function order_automation.cron_database() returns text
+language sql stable
+set search_path = pg_catalog, pg_temp
+-- pg_cron can be created only in cron.database_name, so the extension here says "this database"
+-- without reading the setting, which only superusers and pg_read_all_settings may read. The setting
+-- is trusted only as pg_cron defines it (context postmaster): never a placeholder a session set.
+as $$
+  select case when order_automation.cron_schema() is not null then current_database()::text
+              else (select s.setting from pg_settings s where s.name = 'cron.database_name' and s.context = 'postmaster') end
+$$;
+comment on function order_automation.cron_database() is
+  'The database pg_cron lives in (cron.database_name); NULL when pg_cron is not loaded, or lives elsewhere and this role may not read the setting';
+
 create or replace function order_automation.pg_cron_problem() returns text
 language plpgsql stable
@@ -14,5 +61,5 @@
 as $$
 declare
-  cron_db text := current_setting('cron.database_name', true);
+  cron_db text := order_automation.cron_database();
 begin
   if not exists (select from pg_available_extensions where name = 'pg_cron') then
@@ -21,5 +68,10 @@
                   current_setting('server_version_num')::integer / 10000);
   end if;
-  if cron_db is null or not ('pg_cron' = any (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))) then
+  if cron_db is null and not pg_has_role(current_user, 'pg_read_all_settings', 'usage') then
+    return format('cannot tell where pg_cron runs: the pg_cron extension is not created in database %I, and role %I may not read '
+                  'cron.database_name. As a superuser: GRANT pg_read_all_settings TO %I (or CREATE EXTENSION pg_cron here, if '
+                  'this database is cron.database_name).', current_database(), current_user, current_user);
+  end if;
+  if cron_db is null then
     return 'pg_cron is installed but not loaded: add pg_cron to shared_preload_libraries in postgresql.conf '
            '(shared_preload_libraries = ''pg_cron''), restart the server, and check with SHOW shared_preload_libraries.';
@@ -36,12 +88,4 @@
   'NULL when pg_cron can schedule jobs from this database; otherwise what is wrong and how to fix it';
 
-create or replace function order_automation.cron_schema() returns text
-language sql stable
-set search_path = pg_catalog, pg_temp
--- pg_cron always keeps its objects in schema cron, whatever schema the extension is created in.
-as $$ select 'cron'::text where exists (select from pg_extension where extname = 'pg_cron') $$;
-comment on function order_automation.cron_schema() is
-  'cron when the pg_cron extension is created in this database, NULL otherwise';
-
 create or replace function order_automation.schedule_jobs() returns void
 language plpgsql
@@ -56,16 +100,18 @@
       hint = 'To install without a schedule, migrate with --no-schedule (ORDER_AUTOMATION_SCHEDULE=off) and call the procedures yourself.';
   end if;
-  if not exists (select from pg_extension where extname = 'pg_cron') then
+  if order_automation.cron_schema() is null then
     create extension pg_cron;
   end if;
+  -- Creates the jobs missing from pg_cron and brings the others to the recorded schedule and state
+  -- (a paused job stays paused). cron.schedule upserts by job name and role: running this again
+  -- changes nothing, and only jobs of the role running it (the installer) are touched.
   for j in select * from order_automation.job order by job loop
-    -- cron.schedule upserts by job name: running this again changes nothing.
     execute format('select %1$s.alter_job(%1$s.schedule($1, $2, $3), active => $4)', order_automation.cron_schema())
-      using order_automation.cron_jobname(j.job), j.schedule, j.command, j.active;
+      using order_automation.cron_jobname(j.job), j.schedule, order_automation.job_command(j.job), j.active;
   end loop;
-  update order_automation.job set cron_database = current_database();
+  update order_automation.job set cron_database = current_database() where cron_database is distinct from current_database();
 end $$;
 comment on function order_automation.schedule_jobs() is
-  'Creates or updates the pg_cron jobs of both procedures in this database (which must be cron.database_name); OA010 when pg_cron cannot';
+  'Creates or updates the pg_cron jobs of this database (which must be cron.database_name) as the role running it, each running its fixed command; OA010 when pg_cron cannot';
 
 create or replace function order_automation.install_schedule() returns void
@@ -88,8 +134,12 @@
 returns void
 language plpgsql
+-- As the installing role: the admin role controls the installer's own pg_cron job (cron.alter_job
+-- on its jobid) without any right on schema cron, and can change nothing but its schedule and state.
+security definer
 set search_path = pg_catalog, pg_temp
 as $$
 declare
   j order_automation.job;
+  cron_jobid bigint;
 begin
   update order_automation.job x
@@ -102,13 +152,25 @@
                        (select string_agg(x.job, ', ' order by x.job) from order_automation.job x));
   end if;
-  -- pg_cron in this database: change it now (it refuses an invalid schedule, and so nothing changes).
-  -- Jobs scheduled from another database are changed there by the TypeScript module.
-  if j.cron_database = current_database() then
-    execute format('select %1$s.alter_job(%1$s.schedule($1, $2, $3), active => $4)', order_automation.cron_schema())
-      using order_automation.cron_jobname(j.job), j.schedule, j.command, j.active;
-  end if;
+  -- Not scheduled (installed without a schedule): recorded, and scheduled so by the next migrate.
+  -- pg_cron in another database: out of reach from here; the TypeScript module, run by the
+  -- installing role, changes it there.
+  if j.cron_database is null or order_automation.cron_schema() is null then
+    return;
+  end if;
+  execute format('select j.jobid from %1$s.job j where j.jobname = $1 and j.username = $2', order_automation.cron_schema())
+    into cron_jobid
+    using order_automation.cron_jobname(j.job), current_user;
+  if cron_jobid is null then
+    raise exception using errcode = 'OA011',
+      message = format('job %s is missing from pg_cron (no job %L of role %I in cron.job): nothing changed',
+                       j.job, order_automation.cron_jobname(j.job), current_user),
+      hint = format('Run order-automation migrate as %I: it re-creates the missing jobs, keeping paused ones paused.', current_user);
+  end if;
+  -- pg_cron refuses an invalid schedule, and so nothing changes.
+  execute format('select %1$s.alter_job($1, schedule => $2, active => $3)', order_automation.cron_schema())
+    using cron_jobid, j.schedule, j.active;
 end $$;
 comment on function order_automation.set_schedule(text, text, boolean) is
-  'Changes the cron schedule of a job (e.g. ''*/5 * * * *'') and/or pauses (active false) or resumes it; pg_cron refuses an invalid schedule';
+  'Changes the cron schedule of a job (e.g. ''*/5 * * * *'') and/or pauses (active false) or resumes it, on the installer''s own pg_cron job when pg_cron lives here; OA011 when that job is missing from pg_cron';
 
 create or replace function order_automation.unschedule_jobs() returns void
@@ -120,8 +182,9 @@
 begin
   for j in select * from order_automation.job where cron_database = current_database() loop
-    -- cron.unschedule raises for a missing job: remove only what is there.
+    -- cron.unschedule raises for a missing job: remove only what is there, and only the role's own.
     if order_automation.cron_schema() is not null then
-      execute format('select %1$s.unschedule(jobid) from %1$s.job where jobname = $1', order_automation.cron_schema())
-        using order_automation.cron_jobname(j.job);
+      execute format('select %1$s.unschedule(c.jobid) from %1$s.job c where c.jobname = $1 and c.username = $2',
+                     order_automation.cron_schema())
+        using order_automation.cron_jobname(j.job), current_user;
     end if;
   end loop;
@@ -129,3 +192,3 @@
 end $$;
 comment on function order_automation.unschedule_jobs() is
-  'Removes the pg_cron jobs of this database that schedule_jobs created';
+  'Removes the pg_cron jobs of this database that schedule_jobs created (as the role running it)';

-- >>> 500_status.sql diff
@@ -1,4 +1,27 @@
--- What getStatus and the CLI show: per job, its last run, what is due now, what is held, and the next
--- deadline. Whether pg_cron has the job active is read from pg_cron by the caller (it may live elsewhere).
+-- What getStatus and the CLI show: per job, its last run, what is due now, what is held, the next
+-- deadline, and what pg_cron holds for it when pg_cron lives here (from elsewhere the caller asks).
+
+create or replace function order_automation.pg_cron_jobs()
+returns table (job text, jobid bigint, schedule text, active boolean, command text)
+language plpgsql stable
+-- As the installing role: the admin role reads the state of the installer's jobs without any right
+-- on schema cron, and only of those jobs (the installer's, named for this database's jobs).
+security definer
+set search_path = pg_catalog, pg_temp
+as $$
+begin
+  if order_automation.cron_schema() is null then
+    return;
+  end if;
+  for job, jobid, schedule, active, command in execute format(
+    'select x.job, c.jobid, c.schedule, c.active, c.command
+       from order_automation.job x join %1$s.job c on c.jobname = order_automation.cron_jobname(x.job)
+      where c.username = current_user', order_automation.cron_schema())
+  loop
+    return next;
+  end loop;
+end $$;
+comment on function order_automation.pg_cron_jobs() is
+  'The pg_cron jobs of the package in this database, as pg_cron holds them (none when pg_cron lives in another database)';
 
 create or replace function order_automation.job_status(at timestamptz default now())
@@ -7,5 +30,6 @@
   last_run_id bigint, last_started_at timestamptz, last_finished_at timestamptz,
   last_processed bigint, last_failed bigint, last_error text,
-  due_now bigint, held bigint, next_deadline timestamptz
+  due_now bigint, held bigint, next_deadline timestamptz,
+  cron_state text, cron_schedule text
 )
 language sql stable
@@ -32,9 +56,18 @@
            when 'confirm_shipped_orders' then
              (select min(o.receipt_deadline) from public.new_order o where o.state = 2 and o.held_at is null and o.receipt_deadline > job_status.at)
-         end
+         end,
+         -- NULL: pg_cron lives in another database, where the caller reads it.
+         case when j.cron_database is null then 'not scheduled'
+              when here.pg_cron is null then null
+              when c.jobid is null then 'missing'
+              when c.active then 'active'
+              else 'paused' end,
+         c.schedule
     from order_automation.job j
+    cross join (select order_automation.cron_schema() as pg_cron) here
+    left join order_automation.pg_cron_jobs() c on c.job = j.job
     left join lateral (select * from order_automation.run r where r.job = j.job order by r.id desc limit 1) r on true
    order by j.job
 $$;
 comment on function order_automation.job_status(timestamptz) is
-  'Per job: schedule, active, last run (start, end, orders processed, failures, error), orders due at `at`, orders held, and the next deadline after it';
+  'Per job: schedule, active, last run (start, end, orders processed, failures, error), orders due at `at`, orders held, the next deadline after it, and its state in pg_cron (active, paused, missing, not scheduled; NULL when pg_cron lives in another database)';

-- >>> 600_privileges.sql diff
@@ -1,5 +1,6 @@
 -- Least privilege: nothing of the package is executable by PUBLIC. Two roles (NOLOGIN; grant them to
 -- your login roles): order_automation_app runs the lifecycle, order_automation_admin also the
--- automation, its settings and its schedule. pg_cron runs the jobs as the role that installed them.
+-- automation, its settings and its schedule. pg_cron runs the jobs as the role that installed them,
+-- so nothing either role may write is ever part of what pg_cron runs.
 
 do $$
@@ -17,11 +18,22 @@
 end $$;
 
+-- Every right is listed here, by name, and the privilege matrix test holds the same decisions: a new
+-- object gets no right until it is added below. Revoking first makes an upgrade end where a fresh
+-- install does (an earlier release granted more).
+revoke all on schema order_automation from public;
+revoke all on all tables in schema order_automation from public;
+revoke all on all sequences in schema order_automation from public;
 revoke all on all functions in schema order_automation from public;
 revoke all on all procedures in schema order_automation from public;
-revoke all on schema order_automation from public;
 
 do $$
 begin
   if exists (select from pg_roles where rolname = 'order_automation_app') then
+    revoke all on all tables in schema order_automation from order_automation_app;
+    revoke all on all sequences in schema order_automation from order_automation_app;
+    revoke all on all functions in schema order_automation from order_automation_app;
+    revoke all on all procedures in schema order_automation from order_automation_app;
+    revoke all on public.new_order, public.new_order_detail, public."user", public.user_store, public.store
+      from order_automation_app;
     grant usage on schema order_automation to order_automation_app;
     grant select, insert, update, delete on public.new_order, public.new_order_detail to order_automation_app;
@@ -29,4 +41,5 @@
     grant select on order_automation.order_event, order_automation.settings, order_automation.store_settings
       to order_automation_app;
+    -- set_order_state takes any cause but the jobs' (current_cause() refuses those without a claim).
     grant execute on function
       order_automation.place_order(text, text, text, jsonb), order_automation.pay_order(text),
@@ -34,5 +47,5 @@
       order_automation.payment_started(text, interval), order_automation.extend_receipt(text, interval),
       order_automation.hold(text, text), order_automation.release(text),
-      order_automation.set_order_state(text, smallint, text), order_automation.current_cause()
+      order_automation.set_order_state(text, smallint, text)
       to order_automation_app;
   end if;
@@ -41,13 +54,35 @@
       grant order_automation_app to order_automation_admin;
     end if;
+    revoke all on all tables in schema order_automation from order_automation_admin;
+    revoke all on all sequences in schema order_automation from order_automation_admin;
+    revoke all on all functions in schema order_automation from order_automation_admin;
+    revoke all on all procedures in schema order_automation from order_automation_admin;
+    revoke all on public.new_order, public.new_order_detail, public."user", public.user_store, public.store
+      from order_automation_admin;
     grant usage on schema order_automation to order_automation_admin;
     grant select, update on order_automation.settings to order_automation_admin;
     grant select, insert, update, delete on order_automation.store_settings to order_automation_admin;
-    -- The procedures commit, so they cannot run as the owner: running them takes the rights they use.
-    grant select, insert, update, delete on order_automation.run, order_automation.order_failure to order_automation_admin;
-    grant select, update on order_automation.job to order_automation_admin;
-    grant select on order_automation.order_event to order_automation_admin;
-    grant execute on all functions in schema order_automation to order_automation_admin;
-    grant execute on all procedures in schema order_automation to order_automation_admin;
+    -- The procedures commit, so they cannot run as the owner: running them takes the rights they use
+    -- (the run log, the failures, locking due orders), and EXECUTE on the routines they call.
+    grant select, insert, update, delete on order_automation.run to order_automation_admin;
+    grant select, insert on order_automation.order_failure to order_automation_admin;
+    -- Read only: pg_cron's commands are fixed by job_command(), and schedules change through set_schedule().
+    grant select on order_automation.job, order_automation.order_event to order_automation_admin;
+    grant execute on procedure
+      order_automation.cancel_expired_orders(timestamptz, integer, bigint),
+      order_automation.confirm_shipped_orders(timestamptz, integer, bigint),
+      order_automation.purge_cancelled_orders(timestamptz, integer, bigint),
+      order_automation.purge_history(bigint),
+      order_automation.run_due_orders(text, timestamptz, integer, bigint)
+      to order_automation_admin;
+    grant execute on function
+      order_automation.due_orders(text, timestamptz, integer, text[]),
+      order_automation.process_due_batch(text, timestamptz, integer, bigint, text[]),
+      order_automation.process_orders(text, text[]),
+      order_automation.remind_due_soon(text, timestamptz, bigint, integer),
+      order_automation.cron_jobname(text), order_automation.cron_schema(), order_automation.cron_database(),
+      order_automation.job_status(timestamptz), order_automation.pg_cron_jobs(),
+      order_automation.set_schedule(text, text, boolean)
+      to order_automation_admin;
   end if;
 end $$;
