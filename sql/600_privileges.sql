-- Least privilege: nothing of the package is executable by PUBLIC. Two roles (NOLOGIN; grant them to
-- your login roles): order_automation_app runs the lifecycle, order_automation_admin also the
-- automation, its settings and its schedule. pg_cron runs the jobs as the role that installed them,
-- so nothing either role may write is ever part of what pg_cron runs.

do $$
begin
  -- Roles belong to the cluster: created once, kept by `down` (other databases may use them).
  -- An installer without CREATEROLE installs without them; it can grant the functions itself.
  if not exists (select from pg_roles where rolname = 'order_automation_app')
     and (select rolcreaterole or rolsuper from pg_roles where rolname = current_user) then
    create role order_automation_app nologin;
  end if;
  if not exists (select from pg_roles where rolname = 'order_automation_admin')
     and (select rolcreaterole or rolsuper from pg_roles where rolname = current_user) then
    create role order_automation_admin nologin;
  end if;
end $$;

-- Every right is listed here, by name, and the privilege matrix test holds the same decisions: a new
-- object gets no right until it is added below. Revoking first makes an upgrade end where a fresh
-- install does (an earlier release granted more).
revoke all on schema order_automation from public;
revoke all on all tables in schema order_automation from public;
revoke all on all sequences in schema order_automation from public;
revoke all on all functions in schema order_automation from public;
revoke all on all procedures in schema order_automation from public;

do $$
begin
  if exists (select from pg_roles where rolname = 'order_automation_app') then
    revoke all on all tables in schema order_automation from order_automation_app;
    revoke all on all sequences in schema order_automation from order_automation_app;
    revoke all on all functions in schema order_automation from order_automation_app;
    revoke all on all procedures in schema order_automation from order_automation_app;
    revoke all on public.new_order, public.new_order_detail, public."user", public.user_store, public.store
      from order_automation_app;
    grant usage on schema order_automation to order_automation_app;
    grant select, insert, update, delete on public.new_order, public.new_order_detail to order_automation_app;
    grant select, insert, update on public."user", public.user_store, public.store to order_automation_app;
    grant select on order_automation.order_event, order_automation.settings, order_automation.store_settings
      to order_automation_app;
    -- set_order_state takes any cause but the jobs' (current_cause() refuses those without a claim).
    grant execute on function
      order_automation.place_order(text, text, text, jsonb), order_automation.pay_order(text),
      order_automation.ship_order(text), order_automation.confirm_receipt(text), order_automation.cancel_order(text),
      order_automation.payment_started(text, interval), order_automation.extend_receipt(text, interval),
      order_automation.hold(text, text), order_automation.release(text),
      order_automation.set_order_state(text, smallint, text),
      -- The refusals of the functions above name states through it, with the caller's rights.
      order_automation.state_label(integer)
      to order_automation_app;
  end if;
  if exists (select from pg_roles where rolname = 'order_automation_admin') then
    if exists (select from pg_roles where rolname = 'order_automation_app') then
      grant order_automation_app to order_automation_admin;
    end if;
    revoke all on all tables in schema order_automation from order_automation_admin;
    revoke all on all sequences in schema order_automation from order_automation_admin;
    revoke all on all functions in schema order_automation from order_automation_admin;
    revoke all on all procedures in schema order_automation from order_automation_admin;
    revoke all on public.new_order, public.new_order_detail, public."user", public.user_store, public.store
      from order_automation_admin;
    grant usage on schema order_automation to order_automation_admin;
    grant select, update on order_automation.settings to order_automation_admin;
    grant select, insert, update, delete on order_automation.store_settings to order_automation_admin;
    -- The procedures commit, so they cannot run as the owner: running them takes the rights they use
    -- (the run log, the failures, locking due orders), and EXECUTE on the routines they call.
    grant select, insert, update, delete on order_automation.run to order_automation_admin;
    grant select, insert on order_automation.order_failure to order_automation_admin;
    -- Read by the due scans and the status; written only by the owner's routines (process_batch,
    -- retry_failing_batch): a row deleted by hand would leave its order out of the scans for good.
    grant select on order_automation.failing_order to order_automation_admin;
    -- Read only: pg_cron's commands are fixed by job_command(), and schedules change through set_schedule().
    grant select on order_automation.job, order_automation.order_event to order_automation_admin;
    grant execute on procedure
      order_automation.cancel_expired_orders(timestamptz, integer, bigint),
      order_automation.confirm_shipped_orders(timestamptz, integer, bigint),
      order_automation.purge_cancelled_orders(timestamptz, integer, bigint),
      order_automation.purge_history(bigint),
      order_automation.run_due_orders(text, timestamptz, integer, bigint),
      order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, boolean, text, text, text),
      order_automation.run_due_orders_until_tick(text, integer, bigint)
      to order_automation_admin;
    grant execute on function
      order_automation.due_orders(text, timestamptz, integer, text[]),
      order_automation.process_due_batch(text, timestamptz, integer, bigint, text[]),
      order_automation.process_orders(text, text[]),
      order_automation.process_batch(text, text[], bigint, boolean),
      order_automation.retry_failing_batch(text, timestamptz, integer, bigint),
      order_automation.remind_due_soon(text, timestamptz, bigint, integer),
      -- The waiter: a run started on a connection named pg_cron waits for deadlines, whoever calls it.
      order_automation.run_waits(timestamptz), order_automation.waiter_plan(),
      order_automation.start_runs(text[], integer), order_automation.finish_runs(bigint[], text, text),
      order_automation.waiter_lock_ours(integer), order_automation.successor_waiting(integer),
      order_automation.cron_jobname(text), order_automation.cron_schema(), order_automation.cron_database(),
      order_automation.job_status(timestamptz), order_automation.pg_cron_jobs(),
      order_automation.set_schedule(text, text, boolean)
      to order_automation_admin;
  end if;
end $$;
