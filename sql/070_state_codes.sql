-- The codes of new_order.state live in the settings (an adopted app may use -1 for cancelled): the
-- partial indexes the automation probes are rebuilt when a code changes, in the same transaction.

create or replace function order_automation.index_state_codes() returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  s order_automation.settings;
begin
  select * into s from order_automation.settings;
  -- The predicates must hold the codes as constants: only then can a query that names the code
  -- (planned with its value, see plan_cache_mode in due_orders) use the index. Dropped and created
  -- in one transaction: a concurrent tick waits for the new index rather than scanning the table.
  drop index if exists public.new_order_pay_deadline_due, public.new_order_receipt_deadline_due,
    public.new_order_cancelled_at;
  execute format('create index new_order_pay_deadline_due on public.new_order (pay_deadline)
                    where state = %1$s and held_at is null and (failed_state is null or failed_state <> %1$s)', s.state_unpaid);
  execute format('create index new_order_receipt_deadline_due on public.new_order (receipt_deadline)
                    where state = %1$s and held_at is null and (failed_state is null or failed_state <> %1$s)', s.state_shipped);
  execute format('create index new_order_cancelled_at on public.new_order (cancelled_at) where state = %s',
                 s.state_cancelled);
end $$;
comment on function order_automation.index_state_codes() is
  'Rebuilds the partial indexes of new_order the automation probes (unpaid and shipped orders by deadline, but those it failed to process in that state; cancelled ones by time) for the state codes in settings';

create or replace function order_automation.tg_settings__state_codes() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform order_automation.index_state_codes();
  return null;
end $$;
comment on function order_automation.tg_settings__state_codes() is
  'Rebuilds the indexes that hold state codes when a code in settings changes';

create or replace trigger _200_state_codes after update on order_automation.settings
for each row when ((old.state_unpaid, old.state_shipped, old.state_cancelled)
                   is distinct from (new.state_unpaid, new.state_shipped, new.state_cancelled))
execute function order_automation.tg_settings__state_codes();

-- Refusals name a state as the TypeScript API does, with the code a plain UPDATE writes: 'paid (1)',
-- or 'cancelled (-1)' for an app whose codes differ; a code that is none of the five says so.
create or replace function order_automation.state_label(code integer) returns text
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select format('%s (%s)',
                case state_label.code when s.state_unpaid then 'unpaid' when s.state_paid then 'paid'
                                      when s.state_shipped then 'shipped' when s.state_received then 'received'
                                      when s.state_cancelled then 'cancelled' else 'an unknown state' end,
                coalesce(state_label.code::text, 'null'))
    from order_automation.settings s
$$;
comment on function order_automation.state_label(integer) is
  'A state code named by the codes in settings, as the messages of refusals say it: ''paid (1)''';
