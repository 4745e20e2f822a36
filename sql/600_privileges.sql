-- Least privilege: nothing of the package is executable by PUBLIC. Two roles (NOLOGIN; grant them to
-- your login roles): order_automation_app runs the lifecycle, order_automation_admin also the
-- automation, its settings and its schedule. pg_cron runs the jobs as the role that installed them.

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

revoke all on all functions in schema order_automation from public;
revoke all on all procedures in schema order_automation from public;
revoke all on schema order_automation from public;

do $$
begin
  if exists (select from pg_roles where rolname = 'order_automation_app') then
    grant usage on schema order_automation to order_automation_app;
    grant select, insert, update, delete on public.new_order, public.new_order_detail to order_automation_app;
    grant select, insert, update on public."user", public.user_store, public.store to order_automation_app;
    grant select on order_automation.order_event, order_automation.settings, order_automation.store_settings
      to order_automation_app;
    grant execute on function
      order_automation.place_order(text, text, text, jsonb), order_automation.pay_order(text),
      order_automation.ship_order(text), order_automation.confirm_receipt(text), order_automation.cancel_order(text),
      order_automation.payment_started(text, interval), order_automation.extend_receipt(text, interval),
      order_automation.hold(text, text), order_automation.release(text),
      order_automation.set_order_state(text, smallint, text), order_automation.current_cause()
      to order_automation_app;
  end if;
  if exists (select from pg_roles where rolname = 'order_automation_admin') then
    if exists (select from pg_roles where rolname = 'order_automation_app') then
      grant order_automation_app to order_automation_admin;
    end if;
    grant usage on schema order_automation to order_automation_admin;
    grant select, update on order_automation.settings to order_automation_admin;
    grant select, insert, update, delete on order_automation.store_settings to order_automation_admin;
    -- The procedures commit, so they cannot run as the owner: running them takes the rights they use.
    grant select, insert, update, delete on order_automation.run, order_automation.order_failure to order_automation_admin;
    grant select, update on order_automation.job to order_automation_admin;
    grant select on order_automation.order_event to order_automation_admin;
    grant execute on all functions in schema order_automation to order_automation_admin;
    grant execute on all procedures in schema order_automation to order_automation_admin;
  end if;
end $$;
