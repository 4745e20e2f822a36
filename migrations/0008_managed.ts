// Refusals name the states as the TypeScript API does, by the codes in settings: "order o1 cannot
// change from cancelled (4) to paid (1)" (or "cancelled (-1)" where an adopted app uses -1). Routines
// only: an adopted database gets it the same way (0005_adopt installed the earlier routines onto the
// app's tables; these replace five of them).
import type { MigrationBuilder } from 'node-pg-migrate';
import { apply, previous } from './snapshots/index.js';

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(apply('0008_managed'));
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  // The previous release's versions of the routines this one changed (none of which names states
  // through state_label), and its privileges; then the new function goes.
  pgm.sql(previous('0008_managed'));
  pgm.sql('drop function order_automation.state_label(integer)');
}
