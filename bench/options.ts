// The bench's command line: npm run bench -- [--scale <factor>] [--batch-sizes <n,n,...>] [--database-url <url>]
import { parseArgs } from 'node:util';

export interface BenchOptions {
  /** Orders in the big database: 1,000,000 × scale. */
  orders: number;
  /** Extra drains, one per batch size, to choose the default; empty: none. */
  batchSizes: number[];
  /** A server of the user's to run on, instead of a throwaway local cluster. */
  databaseUrl: string | undefined;
  /** Only this part of the bench (precision: the real-schedule lateness and idle cost, ~5 minutes). */
  only: 'precision' | undefined;
}

export const USAGE = `usage: npm run bench -- [--scale <factor>] [--batch-sizes <n,n,...>] [--database-url <url>] [--only precision]

  --scale <factor>        size of the data: 1,000,000 × factor orders, a tenth of them due for each
                          automation (default 1)
  --batch-sizes <list>    also drain at each of these batch sizes, e.g. 500,1000,2000,5000,10000
  --database-url <url>    run on this server, as a superuser (the bench loads its data with triggers
                          off), in databases of its own, dropped afterwards. Default: a throwaway
                          local PostgreSQL 15 with pg_cron.
                          DATABASE_URL is not read: pass --database-url "$DATABASE_URL" to use it.
  --only precision        only the deadline precision part: lateness on the real pg_cron schedule,
                          idle and under a wave of due orders, and the idle cost of waiting`;

export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseOptions(argv: string[]): BenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      scale: { type: 'string', default: '1' },
      'batch-sizes': { type: 'string' },
      'database-url': { type: 'string' },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return 'help';
  const scale = Number(values.scale);
  // Below 10,000 orders the 10k-order database would be the bigger one.
  if (!Number.isFinite(scale) || scale < 0.01 || scale > 100) {
    throw new UsageError(`--scale must be a number between 0.01 and 100, not "${values.scale}"`);
  }
  const batchSizes = (values['batch-sizes'] ?? '')
    .split(',')
    .filter((s) => s.trim() !== '')
    .map(Number);
  const bad = batchSizes.find((n) => !Number.isInteger(n) || n < 1 || n > 1_000_000);
  if (bad !== undefined)
    throw new UsageError(`--batch-sizes takes integers between 1 and 1000000, not "${values['batch-sizes']}"`);
  if (values.only !== undefined && values.only !== 'precision') {
    throw new UsageError(`--only takes precision, not "${values.only}"`);
  }
  return {
    orders: Math.round(1_000_000 * scale),
    batchSizes,
    databaseUrl: values['database-url'],
    only: values.only as 'precision' | undefined,
  };
}
