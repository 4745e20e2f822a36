// Freezes the current definitions in sql/ into migrations/snapshots/<name>.sql, for a new migration
// to apply forever after, whatever sql/ becomes. Usage: npm run snapshot -- <name> [sql files...]
// (default: every file of sql/, for an initial install).
import { readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const [name, ...files] = process.argv.slice(2);
if (!name || !/^\d{4}_[a-z0-9_]+$/.test(name)) {
  console.error('usage: npm run snapshot -- <NNNN_name> [sql/file.sql ...]');
  process.exit(2);
}
const target = join(root, 'migrations', 'snapshots', `${name}.sql`);
if (existsSync(target)) {
  console.error(`${target} exists: a released snapshot never changes; make a new migration instead.`);
  process.exit(2);
}
const sources =
  files.length > 0
    ? files
    : readdirSync(join(root, 'sql'))
        .filter((f) => f.endsWith('.sql'))
        .sort()
        .map((f) => join('sql', f));
const body = sources.map((f) => `-- >>> ${basename(f)}\n${readFileSync(join(root, f), 'utf8').trimEnd()}\n`).join('\n');
writeFileSync(
  target,
  `-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/${name}.ts. Never edit.\n\n${body}`,
);
console.log(`wrote ${target} from ${sources.length} files`);
