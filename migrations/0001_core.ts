// The first release: the bookstore tables, the lifecycle triggers, the automation and its schedule.
import type { MigrationBuilder } from 'node-pg-migrate';
import { adopting, adoptionRemoved } from './lib/adoption.js';
import { snapshot } from './snapshots/index.js';

export async function up(pgm: MigrationBuilder): Promise<void> {
  // An adopted database gets this release from 0005_adopt, which installs onto the app's tables.
  if (await adopting(pgm)) return;
  pgm.sql(snapshot('0001_core'));
  pgm.sql('select order_automation.install_schedule()');
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  // An adopted database: 0005_adopt's down has removed everything the package added, and kept the app's tables.
  if (await adoptionRemoved(pgm)) return;
  pgm.sql('select order_automation.unschedule_jobs()');
  pgm.sql('drop schema order_automation cascade');
  pgm.sql('drop table public.new_order_detail, public.new_order, public.store, public.user_store, public."user"');
}
