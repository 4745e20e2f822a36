-- The settings table keeps its one row: a DELETE or TRUNCATE would leave new orders without a deadline
-- and every run failing, so both are refused (the row's values are changed with UPDATE).

create or replace function order_automation.tg_settings__keep_one_row() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- Without its row every new order would get no deadline, and every run would fail.
  raise exception using errcode = 'OA006',
    message = 'order_automation.settings has exactly one row: change its values, never delete it',
    hint = 'UPDATE order_automation.settings SET <setting> = <value>, or: order-automation settings set <name>=<value>';
end $$;
comment on function order_automation.tg_settings__keep_one_row() is
  'Refuses DELETE and TRUNCATE of the one settings row';

create or replace trigger _100_keep_one_row before delete or truncate on order_automation.settings
for each statement execute function order_automation.tg_settings__keep_one_row();
