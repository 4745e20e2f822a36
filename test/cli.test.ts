// The order-automation command as a user runs it: spawned through tsx, reading DATABASE_URL or
// --database-url, printing text or --json, and failing with one paragraph and the right exit code.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTestDatabase, one, seedBookstore, type TestDatabase } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const run = promisify(execFile);
const placeOrder = `select order_automation.place_order($1, 'buyer1', 'store1', '[{"book_id":"book1","count":1,"price":10}]')`;

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with DATABASE_URL set to `url` (unset when null), never inheriting the suite's own. */
async function cli(args: string[], url: string | null): Promise<Outcome> {
  const { DATABASE_URL: _ignored, ORDER_AUTOMATION_SCHEDULE: _also, ...env } = process.env;
  try {
    const { stdout, stderr } = await run('node_modules/.bin/tsx', ['src/cli/index.ts', ...args], {
      cwd: root,
      env: url === null ? env : { ...env, DATABASE_URL: url },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout: string; stderr: string };
    if (typeof failed.code !== 'number') throw error;
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

/** A message fit for a user: one paragraph, no stack trace. */
function expectOneParagraph(stderr: string): void {
  expect(
    stderr
      .trim()
      .split('\n')
      .filter((line) => !line.startsWith('Run order-automation --help')),
  ).toHaveLength(1);
  expect(stderr).not.toMatch(/^\s+at /m);
}

let db: TestDatabase;
const settingsRow = () =>
  one<{ payment_timeout: string; batch_size: number }>(
    db.pool,
    'select payment_timeout::text, batch_size from order_automation.settings',
  );

beforeAll(async () => {
  db = await createTestDatabase();
  await seedBookstore(db.pool);
  await db.pool.query(placeOrder, ['o1']);
});

afterAll(async () => {
  await db?.drop();
});

// Commands that leave the shared database as it is run side by side (each spawn costs ~0.5 s).
test.concurrent('status shows both jobs, their schedule and the settings, as a table or as JSON', async () => {
  const [text, json] = await Promise.all([cli(['status'], db.url), cli(['status', '--json'], db.url)]);
  expect(text).toMatchObject({ code: 0, stderr: '' });
  expect(text.stdout).toMatch(/^job\s+cancel_expired_orders$/m);
  expect(text.stdout).toMatch(/^job\s+confirm_shipped_orders$/m);
  expect(text.stdout).toMatch(/^schedule\s+\* \* \* \* \*$/m);
  expect(text.stdout).toMatch(/^next deadline\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in \d+ min\)$/m);
  expect(text.stdout).toMatch(/^batch_size\s+500$/m);

  expect(json.code).toBe(0);
  const status = JSON.parse(json.stdout) as {
    database: string;
    jobs: { job: string; active: boolean; dueNow: number; nextDeadline: string }[];
    settings: { batchSize: number };
  };
  expect(status.database).toBe(db.name);
  expect(status.jobs.map((j) => j.job)).toEqual([
    'cancel_expired_orders',
    'confirm_shipped_orders',
    'purge_cancelled_orders',
    'purge_history',
  ]);
  expect(status.jobs[0]).toMatchObject({ active: false, dueNow: 0 });
  expect(new Date(status.jobs[0]!.nextDeadline).toISOString()).toBe(status.jobs[0]!.nextDeadline);
  expect(status.settings.batchSize).toBe(500);
});

test.concurrent('run cancel with --as-of past the deadline cancels the unpaid order and prints how many', async () => {
  const own = await createTestDatabase();
  try {
    await seedBookstore(own.pool);
    await own.pool.query(placeOrder, ['o2']);
    const later = new Date(Date.now() + 3_600_000).toISOString();
    const [now, afterDeadline] = await Promise.all([
      cli(['run', 'cancel'], own.url),
      cli(['run', 'cancel', '--as-of', later, '--batch-size', '10'], own.url),
    ]);
    expect(now).toMatchObject({ code: 0, stdout: 'cancelled 0 orders\n' });
    expect(afterDeadline).toMatchObject({ code: 0, stdout: 'cancelled 1 order\n', stderr: '' });
    expect((await one<{ state: number }>(own.pool, `select state from new_order where order_id = 'o2'`)).state).toBe(4);
  } finally {
    await own.drop();
  }
});

test.concurrent('events lists the placed order, as a table or as JSON', async () => {
  const [text, json] = await Promise.all([
    cli(['events', '--order', 'o1'], db.url),
    cli(['events', '--order', 'o1', '--limit', '1', '--json'], db.url),
  ]);
  expect(text.code).toBe(0);
  expect(text.stdout).toMatch(
    /^id\s+order\s+from\s+to\s+cause\s+at\s+note\n\d+\s+o1\s+-\s+unpaid\s+place_order\s+\d{4}-/,
  );
  expect(JSON.parse(json.stdout)).toEqual([
    expect.objectContaining({ orderId: 'o1', from: null, to: 'unpaid', cause: 'place_order' }),
  ]);
});

test.concurrent('migrate on a migrated database says it is already up to date', async () => {
  const migrated = await cli(['migrate', '--no-schedule', '--database-url', db.url], null);
  expect(migrated.code).toBe(0);
  expect(migrated.stdout).toMatch(/^already up to date/);
  expect(migrated.stdout).toMatch(/not scheduled in pg_cron/);
});

test.concurrent('--help prints the usage of every command', async () => {
  const help = await cli(['--help'], null);
  expect(help).toMatchObject({ code: 0, stderr: '' });
  for (const command of ['migrate', 'status', 'run cancel|confirm', 'settings', 'events']) {
    expect(help.stdout).toMatch(new RegExp(`^  ${command.replace('|', '\\|')}`, 'm'));
  }
});

test.concurrent('an unknown setting is a usage error that lists the settings', async () => {
  const unknown = await cli(['settings', 'set', 'nosuch=1'], db.url);
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toBe(
    'order-automation: unknown setting "nosuch"; the settings are payment_timeout, receipt_timeout, batch_size, max_run_time, payment_grace, receipt_extension, remind_before, purge_cancelled_after, history_retention, bookkeeping, state_unpaid, state_paid, state_shipped, state_received, state_cancelled, precision.\n' +
      'Run order-automation --help for usage.\n',
  );
});

test.concurrent('an unknown command is a usage error pointing to --help', async () => {
  const unknown = await cli(['frobnicate'], db.url);
  expect(unknown).toMatchObject({ code: 2, stdout: '' });
  expect(unknown.stderr).toMatch(
    /^order-automation: unknown command "frobnicate".*\nRun order-automation --help for usage\.\n$/,
  );
});

test.concurrent('without DATABASE_URL or --database-url the command says how to give the database', async () => {
  const missing = await cli(['status'], null);
  expect(missing.code).toBe(2);
  expect(missing.stderr).toMatch(
    /^order-automation: no database given: pass --database-url .* or set DATABASE_URL\.\n/,
  );
});

test.concurrent('an unreachable database fails with one paragraph, no stack trace and no password', async () => {
  const unreachable = await cli(['status'], 'postgres://nobody:s3cret-pw@127.0.0.1:1/x');
  expect(unreachable.code).toBe(1);
  expect(unreachable.stderr).toMatch(/^order-automation: cannot reach the database: /);
  expectOneParagraph(unreachable.stderr);
  expect(unreachable.stderr).not.toContain('s3cret-pw');
});

// The settings tests change the shared database's settings: they run after the others, one at a time.
test('settings set changes the settings, and settings get shows them', async () => {
  const set = await cli(['settings', 'set', 'payment_timeout=15 minutes', 'batch_size=500'], db.url);
  expect(set.code).toBe(0);
  expect(set.stdout).toMatch(/^payment_timeout\s+15 minutes$/m);
  const [text, json] = await Promise.all([cli(['settings'], db.url), cli(['settings', 'get', '--json'], db.url)]);
  expect(text.stdout).toMatch(
    /^payment_timeout\s+15 minutes\nreceipt_timeout\s+1 minute\nbatch_size\s+500\nmax_run_time\s+\S+.*\n(.*\n){2}remind_before\s+off\n/,
  );
  expect(JSON.parse(json.stdout)).toMatchObject({ paymentTimeout: '15 minutes', batchSize: 500 });
  expect(await settingsRow()).toEqual({ payment_timeout: '00:15:00', batch_size: 500 });
});

test('a refused setting value fails with one paragraph naming it, and no setting changes', async () => {
  const before = await settingsRow();
  const [zero, banana] = await Promise.all([
    cli(['settings', 'set', 'payment_timeout=20 minutes', 'batch_size=0'], db.url),
    cli(['settings', 'set', 'payment_timeout=banana'], db.url),
  ]);
  expect(zero.code).toBe(1);
  expectOneParagraph(zero.stderr);
  expect(zero.stderr).toMatch(/^order-automation: .*batch_size/);
  expect(banana.code).toBe(1);
  expectOneParagraph(banana.stderr);
  expect(banana.stderr).toMatch(/^order-automation: .*"banana"/);
  expect(await settingsRow()).toEqual(before);
});
