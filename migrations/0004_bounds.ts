// Bounded inputs: upper bounds on every interval setting, length limits on ids, hold reasons and the
// history's notes and causes; hold, release, payment_started and extend_receipt run with the
// caller's rights (a shop's row-level security binds them), their events written by a trigger.
import type { MigrationBuilder } from 'node-pg-migrate';
import { adopting, adoptionRemoved } from './lib/adoption.js';
import { apply, previous } from './snapshots/index.js';

/**
 * Runs `constraints` (ALTER TABLE ... ADD CONSTRAINT ... NOT VALID: no table rewrite, new rows are
 * checked from now on), then validates each one that every existing row already meets. One that a
 * row written before breaks stays NOT VALID, with a warning naming it: the upgrade does not fail
 * over old data, and nothing new past the limit gets in.
 */
function addThenValidate(constraints: [table: string, name: string, check: string][]): string {
  const adds = constraints
    .map(([table, name, check]) => `alter table ${table} add constraint "${name}" check (${check}) not valid;`)
    .join('\n');
  const list = constraints.map(([table, name]) => `('${table}', '${name.replace(/'/g, "''")}')`).join(',\n      ');
  return `
${adds}
do $validate$
declare
  c record;
begin
  for c in select * from (values
      ${list}) v(tbl, name) loop
    begin
      execute format('alter table %s validate constraint %I', c.tbl, c.name);
    exception when check_violation then
      raise warning 'order-automation: rows written before this release break "%" on %: kept as they are; new rows are checked', c.name, c.tbl
        using hint = format('Fix those rows, then: ALTER TABLE %s VALIDATE CONSTRAINT %I', c.tbl, c.name);
    end;
  end loop;
end $validate$;`;
}

/** The bookstore tables: ids and hold reasons. Not for an app's own tables (adopted): no new CHECK on them. */
export const shopTableLimits = addThenValidate([
  ['public."user"', 'user_id is at most 255 characters', 'length(user_id) <= 255'],
  ['public.user_store', 'store_id is at most 255 characters', 'length(store_id) <= 255'],
  ['public.store', 'book_id is at most 255 characters', 'length(book_id) <= 255'],
  ['public.new_order', 'order_id is at most 255 characters', 'length(order_id) <= 255'],
  ['public.new_order', 'hold_reason is at most 1000 characters', 'length(hold_reason) <= 1000'],
]);

/** The package's own tables: the settings' upper bounds, the history's notes and causes. */
export const packageTableLimits = `
alter table order_automation.store_settings
  rename constraint "store payment_timeout must be a positive interval or NULL (the global setting)"
  to "store payment_timeout must be a positive interval or NULL";
alter table order_automation.store_settings
  rename constraint "store receipt_timeout must be a positive interval or NULL (the global setting)"
  to "store receipt_timeout must be a positive interval or NULL";
${addThenValidate([
  ['order_automation.settings', 'payment_timeout must be at most 365 days', "payment_timeout <= interval '365 days'"],
  ['order_automation.settings', 'receipt_timeout must be at most 365 days', "receipt_timeout <= interval '365 days'"],
  ['order_automation.settings', 'payment_grace must be at most 365 days', "payment_grace <= interval '365 days'"],
  [
    'order_automation.settings',
    'receipt_extension must be at most 365 days',
    "receipt_extension <= interval '365 days'",
  ],
  ['order_automation.settings', 'remind_before must be at most 365 days', "remind_before <= interval '365 days'"],
  [
    'order_automation.settings',
    'purge_cancelled_after must be at most 3650 days',
    "purge_cancelled_after <= interval '3650 days'",
  ],
  [
    'order_automation.settings',
    'history_retention must be at most 3650 days',
    "history_retention <= interval '3650 days'",
  ],
  [
    'order_automation.store_settings',
    'store payment_timeout must be at most 365 days',
    "payment_timeout <= interval '365 days'",
  ],
  [
    'order_automation.store_settings',
    'store receipt_timeout must be at most 365 days',
    "receipt_timeout <= interval '365 days'",
  ],
  ['order_automation.order_event', 'note is at most 1000 characters', 'length(note) <= 1000'],
  ['order_automation.order_event', 'cause is at most 63 characters', 'length(cause) <= 63'],
])}`;

export async function up(pgm: MigrationBuilder): Promise<void> {
  // An adopted database gets this release from 0005_adopt (its package-table limits, not the app's tables').
  if (await adopting(pgm)) return;
  pgm.sql(shopTableLimits);
  pgm.sql(packageTableLimits);
  // The four functions no longer lock or record through helpers of their own.
  pgm.sql(`
    drop function order_automation.note_event(text, smallint, text, text);
    drop function order_automation.lock_order(text);
  `);
  pgm.sql(apply('0004_bounds'));
  pgm.sql('select order_automation.install_schedule()');
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  // An adopted database: 0005_adopt's down has removed everything the package added.
  if (await adoptionRemoved(pgm)) return;
  pgm.sql(`
    drop trigger _900_noted on public.new_order;
    drop function order_automation.tg_new_order__note();
  `);
  // The previous release's routines (note_event and lock_order with them), as they were, and its privileges.
  pgm.sql(previous('0004_bounds'));
  pgm.sql(`
    alter table order_automation.order_event
      drop constraint "note is at most 1000 characters", drop constraint "cause is at most 63 characters";
    alter table order_automation.store_settings
      drop constraint "store payment_timeout must be at most 365 days",
      drop constraint "store receipt_timeout must be at most 365 days";
    alter table order_automation.store_settings
      rename constraint "store payment_timeout must be a positive interval or NULL"
      to "store payment_timeout must be a positive interval or NULL (the global setting)";
    alter table order_automation.store_settings
      rename constraint "store receipt_timeout must be a positive interval or NULL"
      to "store receipt_timeout must be a positive interval or NULL (the global setting)";
    alter table order_automation.settings
      drop constraint "payment_timeout must be at most 365 days",
      drop constraint "receipt_timeout must be at most 365 days",
      drop constraint "payment_grace must be at most 365 days",
      drop constraint "receipt_extension must be at most 365 days",
      drop constraint "remind_before must be at most 365 days",
      drop constraint "purge_cancelled_after must be at most 3650 days",
      drop constraint "history_retention must be at most 3650 days";
    alter table public.new_order
      drop constraint "order_id is at most 255 characters", drop constraint "hold_reason is at most 1000 characters";
    alter table public.store drop constraint "book_id is at most 255 characters";
    alter table public.user_store drop constraint "store_id is at most 255 characters";
    alter table public."user" drop constraint "user_id is at most 255 characters";
  `);
}
