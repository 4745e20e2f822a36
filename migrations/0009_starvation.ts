// Failing orders no longer starve the others: each is recorded once per job in failing_order and
// marked in new_order.failed_state, which takes it out of its state's due index; runs retry failing
// orders after every order never tried, least recently tried first, one failing batch a run; a run
// keeps at most 100 failures in order_failure.
import type { MigrationBuilder } from 'node-pg-migrate';
import { apply, previous } from './snapshots/index.js';

/** The two due indexes, with or without the failing orders (the codes as in settings). */
function dueIndexes(withoutFailing: boolean): string {
  const failing = (code: string) =>
    withoutFailing ? ` and (failed_state is null or failed_state <> %1$s)', ${code}` : `', ${code}`;
  return `
do $due$
declare
  s order_automation.settings := (select x from order_automation.settings x);
begin
  drop index if exists public.new_order_pay_deadline_due, public.new_order_receipt_deadline_due;
  execute format('create index new_order_pay_deadline_due on public.new_order (pay_deadline)
                    where state = %1$s and held_at is null${failing('s.state_unpaid')});
  execute format('create index new_order_receipt_deadline_due on public.new_order (receipt_deadline)
                    where state = %1$s and held_at is null${failing('s.state_shipped')});
end $due$;`;
}

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(`
    -- A package column on new_order, nullable without a default (no rewrite of the rows), as on an
    -- adopted app's table; an app's own smallint column of that name is used as it is, and kept by down.
    do $column$
    begin
      if not exists (select from pg_catalog.pg_attribute a
                      where a.attrelid = 'public.new_order'::regclass and a.attname = 'failed_state' and not a.attisdropped) then
        alter table public.new_order add column failed_state smallint;
        comment on column public.new_order.failed_state is
          'The state in which order_automation last failed to process the order (order_automation.failing_order): it then leaves that state''s due index, and later runs retry it after the orders never tried';
        update order_automation.adopted_table set added_columns = added_columns || 'failed_state'::text
         where table_name = 'new_order';
      elsif (select a.atttypid from pg_catalog.pg_attribute a
              where a.attrelid = 'public.new_order'::regclass and a.attname = 'failed_state' and not a.attisdropped)
            <> 'smallint'::regtype then
        raise exception 'new_order has a column failed_state of its own, not smallint: order-automation needs that name'
          using hint = 'Rename the app''s column, then migrate again.';
      end if;
    end $column$;

    create table order_automation.failing_order (
      job text not null,
      order_id text not null,
      failures integer not null default 1,
      first_failed_at timestamptz not null default clock_timestamp(),
      last_failed_at timestamptz not null default clock_timestamp(),
      sqlstate text not null,
      message text not null,
      tried_at timestamptz not null default clock_timestamp(),
      last_run_id bigint,
      primary key (job, order_id)
    );
    create index failing_order_tried on order_automation.failing_order (job, tried_at);
    comment on table order_automation.failing_order is
      'Orders a job failed to process, one row per order and job, with how many times and the last error: runs retry them after every order never tried, least recently tried first, and stop at the first batch that fails again; processing one deletes its row';
    comment on table order_automation.order_failure is
      'Orders a run skipped because processing them raised an error, with the error: the first 100 of each run (run.failed counts them all; failing_order keeps each failing order once)';

    -- Signature and result type that change: drop by the full old signature, then create.
    drop procedure order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, text[], text, text, text);
    drop function order_automation.job_status(timestamptz);
  `);
  // Rebuilt in this transaction: a concurrent tick waits for the new index rather than scanning the
  // table (the index of cancelled orders, which may hold them all, is unchanged).
  pgm.sql(dueIndexes(true));
  pgm.sql(apply('0009_starvation'));
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(`
    drop procedure order_automation.run_due_orders_in_batches(text[], bigint[], timestamptz, integer, timestamptz, boolean, text, text, text);
    drop function order_automation.retry_failing_batch(text, timestamptz, integer, bigint),
      order_automation.process_batch(text, text[], bigint, boolean);
    drop function order_automation.job_status(timestamptz);
  `);
  // The previous release's versions of the routines this one changed, and its privileges.
  pgm.sql(previous('0009_starvation'));
  pgm.sql(`
    drop table order_automation.failing_order;
    comment on table order_automation.order_failure is
      'Orders a run skipped because processing them raised an error; they are retried by the next run';
    -- The column goes if the package added it (an app's own stays); the due indexes go back to all
    -- orders of their state.
    do $column$
    begin
      if not exists (select from order_automation.adopted_table t where t.table_name = 'new_order')
         or exists (select from order_automation.adopted_table t
                     where t.table_name = 'new_order' and 'failed_state' = any (t.added_columns)) then
        drop index if exists public.new_order_pay_deadline_due, public.new_order_receipt_deadline_due;
        alter table public.new_order drop column failed_state;
        update order_automation.adopted_table set added_columns = array_remove(added_columns, 'failed_state')
         where table_name = 'new_order';
      end if;
    end $column$;
  `);
  pgm.sql(dueIndexes(false));
}
