// The first release: the bookstore tables, the lifecycle triggers, the automation and its schedule.
import type { MigrationBuilder } from 'node-pg-migrate';
import { snapshot } from './snapshots/index.js';

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(snapshot('0001_core'));
  pgm.sql('select order_automation.install_schedule()');
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.sql('select order_automation.unschedule_jobs()');
  pgm.sql('drop schema order_automation cascade');
  pgm.sql('drop table public.new_order_detail, public.new_order, public.store, public.user_store, public."user"');
}
