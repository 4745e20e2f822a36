// Refusals name the states as the TypeScript API does ("cannot change from cancelled (4) to paid (1)").
import type { MigrationBuilder } from 'node-pg-migrate';
import { snapshot } from './snapshots/index.js';

const changed = ['100_order_lifecycle.sql', '200_order_actions.sql', '210_order_holds.sql'];

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(snapshot('0003_managed'));
  pgm.sql('select order_automation.install_schedule()');
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  // The previous release's versions of the changed routines, and its privileges.
  pgm.sql(snapshot('0002_shop_features', (file) => [...changed, '600_privileges.sql'].includes(file)));
}
