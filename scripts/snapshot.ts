// Freezes what changed in sql/ since the last release into migrations/snapshots/<name>.sql, for the new
// migration to apply forever after, whatever sql/ becomes. Usage: npm run snapshot -- <NNNN_name> [--replace]
// (--replace rewrites the newest snapshot while it is not on main yet; a released one never changes).
// A file changed when its text, but for its opening comment, differs from its released version. Changed
// routine files are frozen whole; changed table files (below 050) only recorded, since the migration
// changes the tables with ALTERs of its own; the privileges file is applied again last, for new routines.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fingerprint, isRoutineFile, released, releases } from '../migrations/snapshots/index.js';

const reappliedLast = '600_privileges.sql';
const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const replace = args.includes('--replace');
const [name, ...extra] = args.filter((a) => a !== '--replace');
if (!name || extra.length > 0 || !/^\d{4}_[a-z0-9_]+$/.test(name)) {
  console.error('usage: npm run snapshot -- <NNNN_name> [--replace]');
  process.exit(2);
}
const target = join(root, 'migrations', 'snapshots', `${name}.sql`);
const path = `migrations/snapshots/${name}.sql`;
const newest = releases().at(-1);
const last = releases()
  .filter((r) => r < name)
  .at(-1);
if (existsSync(target) && !(replace && name === newest && !onMain(path))) {
  console.error(
    `${path} exists: a released snapshot never changes; make a new migration instead` +
      ` (--replace rewrites only the newest snapshot, and only while it is not on main).`,
  );
  process.exit(2);
}
if (!existsSync(target) && newest !== undefined && name <= newest) {
  console.error(`${name} must sort after the newest release, ${newest}.`);
  process.exit(2);
}

const files = readdirSync(join(root, 'sql'))
  .filter((f) => f.endsWith('.sql'))
  .sort();
const text = new Map(files.map((f) => [f, readFileSync(join(root, 'sql', f), 'utf8').trimEnd() + '\n']));
const changed = files.filter((f) => {
  const was = released(f, name);
  return was === undefined || fingerprint(text.get(f)!) !== (was.recorded ?? fingerprint(was.text!));
});
if (changed.length === 0) {
  console.log(`nothing in sql/ changed since ${last}: no snapshot written.`);
  process.exit(0);
}

const tables = changed.filter((f) => !isRoutineFile(f));
const routines = changed.filter((f) => isRoutineFile(f) && f !== reappliedLast);
const sections = [
  ...tables.map((f) => `-- >>> ${f} recorded ${fingerprint(text.get(f)!)}\n`),
  ...routines.map((f) => `-- >>> ${f}\n${text.get(f)}`),
  changed.includes(reappliedLast)
    ? `-- >>> ${reappliedLast}\n${text.get(reappliedLast)}`
    : `-- >>> ${reappliedLast} from ${released(reappliedLast, name)!.release}\n`,
];
writeFileSync(
  target,
  `-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/${name}.ts. Never edit.\n\n${sections.join('\n')}`,
);

console.log(`wrote ${path}, applying ${[...routines, reappliedLast].join(', ')}`);
const added = changed.filter((f) => released(f, name) === undefined);
if (added.length > 0) console.log(`new files (down must drop what they create): ${added.join(', ')}`);
if (tables.length > 0) {
  console.log(`table files changed (recorded, not applied): ${tables.join(', ')}`);
  console.log(`  migrations/${name}.ts must ALTER the tables to match them (and undo that in down).`);
}

/** Whether main already holds the snapshot, i.e. it was released (false when git cannot tell). */
function onMain(file: string): boolean {
  try {
    execFileSync('git', ['cat-file', '-e', `main:${file}`], { cwd: root, stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
