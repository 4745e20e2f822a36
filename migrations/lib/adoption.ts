// Installing onto an app's own tables (migrate --adopt): the releases before the one that learned to
// adopt stand aside, and that release installs everything at once onto the app's tables (and, going
// down, removes everything it added at once). migrate() says which through session settings.
import type { MigrationBuilder } from 'node-pg-migrate';

async function setting(pgm: MigrationBuilder, name: string): Promise<string> {
  const rows = (await pgm.db.select(`select coalesce(current_setting($1, true), '') as value`, [name])) as {
    value: string;
  }[];
  return rows[0]?.value ?? '';
}

/** True while migrate({ adopt: true }) installs onto tables an app created. */
export async function adopting(pgm: MigrationBuilder): Promise<boolean> {
  return (await setting(pgm, 'order_automation.adopt')) === 'on';
}

/** True once, going down, the adopting release has removed everything the package added. */
export async function adoptionRemoved(pgm: MigrationBuilder): Promise<boolean> {
  return (await setting(pgm, 'order_automation.adoption_removed')) === 'on';
}
