// Per-store timeouts, payment grace, receipt extension, holds, reminders, purging cancelled orders,
// bounded history, the watchable event log, pausable jobs, and least-privilege roles.
import type { MigrationBuilder } from 'node-pg-migrate';
import { adopting, adoptionRemoved } from './lib/adoption.js';
import { previous, snapshot } from './snapshots/index.js';

/** What this release changed in the bookstore's tables. */
const bookstoreChanges = `
    alter table public.new_order
      add column held_at timestamptz, add column hold_reason text,
      add column receipt_extended_at timestamptz, add column reminded_state smallint;
    comment on column public.new_order.held_at is
      'Set by order_automation.hold(): a held order is neither auto-cancelled nor auto-confirmed';
    comment on column public.new_order.reminded_state is
      'The state whose due-soon reminder was written (order_automation remind_before): once per order and state';
    drop index public.new_order_pay_deadline_due, public.new_order_receipt_deadline_due;
    create index new_order_pay_deadline_due on public.new_order (pay_deadline) where state = 0 and held_at is null;
    create index new_order_receipt_deadline_due on public.new_order (receipt_deadline) where state = 2 and held_at is null;
    create index new_order_cancelled_at on public.new_order (cancelled_at) where state = 4;
    alter table order_automation.store_settings
      add foreign key (store_id) references public.user_store on delete cascade;
`;

/**
 * What this release changed in the order_automation schema's own tables. A database adopted later
 * gets it too (0005_adopt), onto tables an app created: so it touches none of the bookstore's.
 */
export const automationSchemaChanges = `
    -- Measured by npm run bench: 500 halves buyers' p99 during a drain for ~10% of throughput.
    alter table order_automation.settings alter column batch_size set default 500;
    update order_automation.settings set batch_size = 500 where batch_size = 1000;
    alter table order_automation.settings
      add column payment_grace interval not null default '5 minutes',
      add column receipt_extension interval not null default '3 days',
      add column remind_before interval,
      add column purge_cancelled_after interval,
      add column history_retention interval not null default '30 days',
      add constraint "payment_grace must be a positive interval" check (payment_grace > interval '0'),
      add constraint "receipt_extension must be a positive interval" check (receipt_extension > interval '0'),
      add constraint "remind_before must be a positive interval or NULL (off)" check (remind_before > interval '0'),
      add constraint "purge_cancelled_after must be zero or more, or NULL (keep)" check (purge_cancelled_after >= interval '0'),
      add constraint "history_retention must be at least 1 hour" check (history_retention >= interval '1 hour');
    comment on column order_automation.settings.payment_grace is
      'Default of payment_started(): how long an order whose payment is in flight is safe from auto-cancel';
    comment on column order_automation.settings.receipt_extension is
      'Default of extend_receipt(): how much the buyer may push the receipt deadline, once';
    comment on column order_automation.settings.remind_before is
      'Write payment_due_soon / receipt_due_soon events this long before a deadline (NULL: no reminders)';
    comment on column order_automation.settings.purge_cancelled_after is
      'purge_cancelled_orders() deletes cancelled orders this long after cancellation (NULL: keep; 0: at once)';
    comment on column order_automation.settings.history_retention is
      'purge_history() deletes the package''s run log and its pg_cron run details older than this';

    -- Its foreign key to user_store is the bookstore's part: an app's own user_store may have no key on store_id.
    create table order_automation.store_settings (
      store_id text primary key,
      payment_timeout interval,
      receipt_timeout interval,
      constraint "store payment_timeout must be a positive interval or NULL (the global setting)" check (payment_timeout > interval '0'),
      constraint "store receipt_timeout must be a positive interval or NULL (the global setting)" check (receipt_timeout > interval '0')
    );
    comment on table order_automation.store_settings is
      'Per-store overrides of payment_timeout / receipt_timeout (NULL: the global setting); deadlines of new orders and new shipments follow them';

    alter table order_automation.order_event
      add column note text,
      add column xid xid8 not null default pg_current_xact_id();
    create index order_event_xid on order_automation.order_event (xid);
    comment on table order_automation.order_event is
      'Every state change of every order (from_state NULL: placed; to_state NULL: deleted), and events without a change (from_state = to_state: payment_started, hold, release, receipt_extended, payment_due_soon, receipt_due_soon). Causes of the automation: payment_timeout, receipt_timeout';

    alter table order_automation.job add column active boolean not null default true;
    insert into order_automation.job (job, command) values
      ('purge_cancelled_orders', 'CALL order_automation.purge_cancelled_orders()'),
      ('purge_history', 'CALL order_automation.purge_history()');
    update order_automation.job set schedule = '17 * * * *' where job = 'purge_history';
`;

export async function up(pgm: MigrationBuilder): Promise<void> {
  // An adopted database gets this release from 0005_adopt, which installs onto the app's tables.
  if (await adopting(pgm)) return;
  pgm.sql(automationSchemaChanges);
  pgm.sql(bookstoreChanges);
  pgm.sql(`
    -- Signatures and result types that change: drop by the full old signature, then create.
    drop function order_automation.job_status(timestamptz);
    drop function order_automation.set_schedule(text, text);
  `);
  pgm.sql(snapshot('0002_shop_features'));
  pgm.sql('select order_automation.install_schedule()');
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  // An adopted database: 0005_adopt's down has removed everything the package added.
  if (await adoptionRemoved(pgm)) return;
  pgm.sql(`
    select order_automation.unschedule_jobs();
    drop trigger _100_keep_one_row on order_automation.settings;
    drop function order_automation.tg_settings__keep_one_row();
    delete from order_automation.job where job in ('purge_cancelled_orders', 'purge_history');
    drop procedure order_automation.purge_cancelled_orders(timestamptz, integer, bigint);
    drop procedure order_automation.purge_history(bigint);
    drop function order_automation.payment_started(text, interval), order_automation.extend_receipt(text, interval),
      order_automation.hold(text, text), order_automation.release(text), order_automation.lock_order(text),
      order_automation.note_event(text, smallint, text, text), order_automation.remind_due_soon(text, timestamptz),
      order_automation.due_orders(text, timestamptz, integer, text[]), order_automation.process_orders(text, text[]),
      order_automation.job_status(timestamptz), order_automation.set_schedule(text, text, boolean);
    drop table order_automation.store_settings;
    alter table order_automation.job drop column active;
    drop index order_automation.order_event_xid;
    alter table order_automation.order_event drop column note, drop column xid;
    comment on table order_automation.order_event is
      'Every state change of every order (from_state NULL: placed; to_state NULL: deleted). Causes of the automation: payment_timeout, receipt_timeout';
    alter table order_automation.settings alter column batch_size set default 1000;
    update order_automation.settings set batch_size = 1000 where batch_size = 500;
    alter table order_automation.settings
      drop column payment_grace, drop column receipt_extension, drop column remind_before,
      drop column purge_cancelled_after, drop column history_retention;
    drop index public.new_order_pay_deadline_due, public.new_order_receipt_deadline_due, public.new_order_cancelled_at;
    alter table public.new_order
      drop column held_at, drop column hold_reason, drop column receipt_extended_at, drop column reminded_state;
    create index new_order_pay_deadline_due on public.new_order (pay_deadline) where state = 0;
    create index new_order_receipt_deadline_due on public.new_order (receipt_deadline) where state = 2;
  `);
  // The first release's routines, as they were (the files new in this release were dropped above);
  // and its privileges (executable by PUBLIC).
  pgm.sql(previous('0002_shop_features'));
  pgm.sql(`
    grant execute on all functions in schema order_automation to public;
    grant execute on all procedures in schema order_automation to public;
    select order_automation.install_schedule();
  `);
}
