// Conservation under every isolation level and in single statements: a change of an order's lines
// writes a new version of the order (a REPEATABLE READ or SERIALIZABLE payer or canceller whose
// snapshot shows the old lines fails with 40001 instead of booking them), and a journal local to the
// transaction lets the triggers of one statement that changes orders and their lines together book
// each book once. Routines and triggers only: no table changes, the same on an adopted database.
import type { MigrationBuilder } from 'node-pg-migrate';
import { apply, previous } from './snapshots/index.js';

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(apply('0007_conservation'));
  pgm.sql('select order_automation.install_schedule()');
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(`
    drop trigger _010_open_statement on public.new_order;
    drop trigger _010_open_statement on public.new_order_detail;
    drop function order_automation.tg_statement__open(), order_automation.close_statement(text),
      order_automation.count_statements(integer, integer), order_automation.open_statements(),
      order_automation.statement_journal(text), order_automation.write_statement_journal(text, jsonb),
      order_automation.settle_order_statement(text[], text[], integer[]);
  `);
  // The previous release's lifecycle and lines triggers, as they were, and its privileges.
  pgm.sql(previous('0007_conservation'));
}
