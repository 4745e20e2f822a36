// Deadline precision: pg_cron's run waits for deadlines until just past its next tick (setting
// precision), one waiter per database for both jobs; each run records how late it processed orders.
import type { MigrationBuilder } from 'node-pg-migrate';
import { apply, previous } from './snapshots/index.js';

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(`
    alter table order_automation.settings
      add column precision interval not null default '1 second',
      add constraint "precision must be between 10 milliseconds and 1 minute"
        check (precision between interval '10 milliseconds' and interval '1 minute');
    comment on column order_automation.settings.precision is
      'How late after its deadline an order may be processed: pg_cron''s run waits for deadlines until the next tick, checking at least this often (1 minute: one pass per tick)';
    comment on column order_automation.settings.max_run_time is
      'A run called by hand (or by pg_cron at precision 1 minute) stops starting new batches after this long, so it ends before the next pg_cron tick';

    alter table order_automation.run add column max_lateness interval;
    comment on column order_automation.run.max_lateness is
      'The latest, after its deadline, that the run processed an order (processed time minus deadline; negative: before it, for an as_of ahead of now)';

    -- Result types that change: drop by the full old signature, then create.
    drop function order_automation.process_due_batch(text, timestamptz, integer, bigint, text[]);
    drop function order_automation.process_orders(text, text[]);
    drop function order_automation.job_status(timestamptz);
  `);
  pgm.sql(apply('0006_precision'));
  pgm.sql('select order_automation.install_schedule()');
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(`
    drop procedure order_automation.run_due_orders_until_tick(text, integer, bigint);
    drop procedure order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, text[], text, text, text);
    drop function order_automation.run_waits(timestamptz), order_automation.waiter_plan(),
      order_automation.start_runs(text[], integer), order_automation.finish_runs(bigint[], text, text),
      order_automation.waiter_lock_ours(integer), order_automation.successor_waiting(integer);
    drop function order_automation.process_due_batch(text, timestamptz, integer, bigint, text[]);
    drop function order_automation.process_orders(text, text[]);
    drop function order_automation.job_status(timestamptz);
  `);
  // The previous release's versions of the routines this one changed, and its privileges.
  pgm.sql(previous('0006_precision'));
  pgm.sql(`
    alter table order_automation.run drop column max_lateness;
    alter table order_automation.settings drop column precision;
    comment on column order_automation.settings.max_run_time is
      'A run stops starting new batches after this long, so it ends before the next pg_cron tick';
  `);
  pgm.sql('select order_automation.install_schedule()');
}
