// Freezes what changed in sql/ since the last release into migrations/snapshots/<name>.sql, for the new
// migration to apply forever after, whatever sql/ becomes. Usage: npm run snapshot -- <NNNN_name> [--replace]
// (--replace rewrites the newest snapshot while it is not on main yet; a released one never changes).
// A file changed when its text, comments included, differs from its released version (trailing
// whitespace at the end aside). A changed routine file is frozen as a unified diff against its released
// version (`diff -U2`; a new file's diff adds every line); a changed table file (below 050) is only
// recorded by fingerprint, since the migration changes the tables with ALTERs of its own; the privileges
// file is applied again last, for new routines.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fingerprint, isRoutineFile, normal, patch, released, releases } from '../migrations/snapshots/index.js';

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
const text = new Map(files.map((f) => [f, normal(readFileSync(join(root, 'sql', f), 'utf8'))]));
const was = new Map(files.map((f) => [f, released(f, name)]));
const changed = files.filter((f) => {
  const version = was.get(f);
  if (version === undefined) return true;
  return version.text !== undefined ? version.text !== text.get(f) : version.recorded !== fingerprint(text.get(f)!);
});
if (changed.length === 0) {
  console.log(`nothing in sql/ changed since ${last}: no snapshot written.`);
  process.exit(0);
}

const tables = changed.filter((f) => !isRoutineFile(f));
const routines = changed.filter((f) => isRoutineFile(f) && f !== reappliedLast);
const sections = [
  ...tables.map((f) => `-- >>> ${f} recorded ${fingerprint(text.get(f)!)}\n`),
  ...routines.map((f) => `-- >>> ${f} diff\n${diff(f)}`),
  changed.includes(reappliedLast)
    ? `-- >>> ${reappliedLast} diff\n${diff(reappliedLast)}`
    : `-- >>> ${reappliedLast} from ${was.get(reappliedLast)!.release}\n`,
];
writeFileSync(
  target,
  `-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/${name}.ts. Never edit.\n\n${sections.join('\n')}`,
);

console.log(`wrote ${path}, applying ${[...routines, reappliedLast].join(', ')}`);
const added = changed.filter((f) => was.get(f) === undefined);
if (added.length > 0) console.log(`new files (down must drop what they create): ${added.join(', ')}`);
if (tables.length > 0) {
  console.log(`table files changed (recorded, not applied): ${tables.join(', ')}`);
  console.log(`  migrations/${name}.ts must change the tables to match them with ALTERs (and undo that in down);`);
  console.log(`  a change to their comments alone needs none.`);
}

/**
 * The hunks of `diff -U2` from a file's released text to its text in sql/, checked by applying them
 * back: two lines of context, so that no six lines of a diff repeat an earlier snapshot.
 */
function diff(file: string): string {
  const before = was.get(file)?.text ?? '';
  const after = text.get(file)!;
  const work = mkdtempSync(join(tmpdir(), 'oa-snapshot-'));
  try {
    writeFileSync(join(work, 'released'), before);
    writeFileSync(join(work, 'sql'), after);
    const run = spawnSync('diff', ['-U2', join(work, 'released'), join(work, 'sql')], { encoding: 'utf8' });
    // diff exits 1 when the files differ, 0 when they do not, 2 on trouble.
    if (run.status !== 1) throw new Error(`diff -U2 failed on ${file}: ${run.error?.message ?? run.stderr}`);
    const hunks = run.stdout.replace(/^--- .*\n\+\+\+ .*\n/, '');
    if (patch(before, hunks, `${name}: ${file}`) !== after) {
      throw new Error(`the diff of ${file} does not yield sql/${file} again: not written`);
    }
    return hunks;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
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
