// What the command prints from the database reaches a terminal: order ids, hold reasons, store ids,
// schedules and run errors are written by apps and admins, so they may carry escape sequences (clear
// the screen, set the window title, write the clipboard with OSC 52) or a line break that forges an
// event line. Every such text is printed escaped; --json stays exact (and escapes them the JSON way).
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { holdOrder, placeOrder } from '../../src/index.js';
import { cliInProcess } from '../cli-in-process.js';
import { seedBookstore, type TestDatabase } from '../helpers.js';
import { openFigures, reliabilityDatabase } from './support.js';

const tally = openFigures(import.meta.url);
const root = fileURLToPath(new URL('../..', import.meta.url));
let db: TestDatabase;

/** Texts a terminal must never receive raw, each in an order id and in a hold reason. */
const hostile = {
  clearScreen: 'o\u001b[2J\u001b[H clear',
  windowTitle: 'o\u001b]0;owned\u0007 title',
  clipboard: 'o\u001b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\u0007 clipboard',
  c1Csi: 'o\u009b31m c1',
  forgedLine: 'o\n999999  2030-01-01 00:00:00 UTC  forged  unpaid -> paid  pay_order',
  carriageReturn: 'o\r999999  forged over the line',
  bidi: 'o\u202eevil\u202c bidi',
  lineSeparator: 'o\u2028next line',
  del: 'o\u007f del',
};
const ids = Object.entries(hostile).map(([name, text]) => `${text} ${name}`);

/** A character a terminal acts on (a line break other than the one ending each printed line included). */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const raw = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

function rawCharacters(output: string): string[] {
  return [...output].filter((c) => raw.test(c)).map((c) => `U+${c.codePointAt(0)!.toString(16).padStart(4, '0')}`);
}

beforeAll(async () => {
  db = await reliabilityDatabase();
  await seedBookstore(db.pool, { stock: 10_000 });
  for (const id of ids) {
    await placeOrder(db.pool, {
      orderId: id,
      userId: 'buyer1',
      storeId: 'store1',
      items: [{ bookId: 'book1', count: 1, price: 5 }],
    });
    await holdOrder(db.pool, id, `reason of ${id}`);
    tally.inputsTried += 2;
  }
  // Text only an admin (or the app's own store rows) sets, shown by status and store-settings.
  await db.pool.query(`insert into "user" (user_id) values ('seller_x')`);
  await db.pool.query(`insert into user_store (store_id, user_id) values ($1, 'seller_x')`, [hostile.windowTitle]);
  await db.pool.query(`insert into order_automation.store_settings (store_id, payment_timeout) values ($1, '1 hour')`, [
    hostile.windowTitle,
  ]);
  await db.pool.query(
    `insert into order_automation.run (job, as_of, batch_size, finished_at, error)
     values ('cancel_expired_orders', now(), 1, now(), $1)`,
    [`boom ${hostile.clipboard}\n${hostile.forgedLine}`],
  );
  // A schedule can no longer carry such text: the job table's check refuses it.
  await expect(
    db.pool.query(`update order_automation.job set schedule = $1 where job = 'confirm_shipped_orders'`, [
      `* * * * *${hostile.clearScreen}`,
    ]),
  ).rejects.toThrow(/schedule must be a pg_cron schedule/);
  tally.inputsTried += 4;
});
afterAll(async () => db?.drop());

/** Runs events --follow as a user does (a process of its own), until it printed `lines` lines; then Ctrl-C. */
async function follow(args: string[], lines: number): Promise<string> {
  const child = spawn('node_modules/.bin/tsx', ['src/cli/index.ts', 'events', '--follow', ...args], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: db.url },
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`events --follow printed ${stdout.split('\n').length - 1} lines in 30 s: ${stderr}`));
    }, 30_000);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.split('\n').length - 1 >= lines) child.kill('SIGINT');
    });
    child.on('exit', () => {
      clearTimeout(timer);
      resolve(stdout);
    });
  });
}

describe('text from the database, printed', () => {
  test('events prints hostile order ids and hold reasons escaped: one line per event, no raw control character', async () => {
    const { code, stdout, stderr } = await cliInProcess(['events'], db.url);
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    tally.expectNone('events prints no raw control character', rawCharacters(stdout).length, rawCharacters(stdout));
    const events = Number((await db.pool.query('select count(*) n from order_automation.order_event')).rows[0].n);
    // The header and one line per event: no line forged by a line break in an id or a reason.
    tally.expectNone('events prints one line per event', stdout.trimEnd().split('\n').length - 1 - events);
    expect(stdout).toContain('o\\u001b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\\u0007 clipboard');
    expect(stdout).toContain('o\\n999999  2030-01-01');
    expect(stdout).toContain('reason of o\\u001b[2J\\u001b[H clear');
  });

  test('events --order with a hostile id finds its events and prints them escaped', async () => {
    for (const id of ids) {
      tally.inputsTried++;
      const { code, stdout } = await cliInProcess(['events', '--order', id], db.url);
      expect(code).toBe(0);
      tally.expectNone(`events --order ${JSON.stringify(id)}: no raw control character`, rawCharacters(stdout).length);
      expect(stdout.trimEnd().split('\n')).toHaveLength(3); // header, placed, hold
    }
  });

  test('events --follow prints hostile events escaped, one line each', async () => {
    const stdout = await follow(['--after', '0'], 2 * ids.length);
    tally.expectNone(
      'events --follow prints no raw control character',
      rawCharacters(stdout).length,
      rawCharacters(stdout),
    );
    const lines = stdout.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(2 * ids.length);
    for (const line of lines) expect(line).toMatch(/^\d+ {2}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC {2}o/);
  }, 40_000);

  test('status, store-settings, hold and release print admin-set and app-set text escaped', async () => {
    const outputs = await Promise.all([
      cliInProcess(['status'], db.url),
      cliInProcess(['store-settings'], db.url),
      cliInProcess(['hold', ids[0]!, 'again'], db.url), // refused (already held): the error echoes the id and the reason
      cliInProcess(['release', ids[3]!], db.url),
    ]);
    for (const [i, { stdout, stderr }] of outputs.entries()) {
      const printed = stdout + stderr;
      tally.expectNone(`command ${i}: no raw control character`, rawCharacters(printed).length, rawCharacters(printed));
    }
    const [status] = outputs;
    expect(status!.code).toBe(0);
    expect(status!.stdout).toMatch(/^error\s+boom o\\u001b\]52;c;.*\\no\\n999999/m);
    expect(outputs[3]!.stdout).toMatch(/^order o\\u009b31m c1 c1Csi released/);
    await holdOrder(db.pool, ids[3]!, `reason of ${ids[3]}`);
  });

  test('--json prints every hostile text exactly, with nothing a terminal acts on', async () => {
    const { code, stdout } = await cliInProcess(['events', '--json'], db.url);
    expect(code).toBe(0);
    tally.expectNone('--json prints no raw control character', rawCharacters(stdout).length, rawCharacters(stdout));
    const events = JSON.parse(stdout) as { orderId: string; note: string | null; cause: string }[];
    expect(new Set(events.map((e) => e.orderId))).toEqual(new Set(ids));
    expect(events.filter((e) => e.cause === 'hold').map((e) => e.note)).toEqual(
      expect.arrayContaining(ids.map((id) => `reason of ${id}`)),
    );
    const status = await cliInProcess(['status', '--json'], db.url);
    tally.expectNone('status --json prints no raw control character', rawCharacters(status.stdout).length);
    const parsed = JSON.parse(status.stdout) as {
      jobs: { job: string; lastRun: { error: string | null } | null }[];
    };
    expect(parsed.jobs.find((j) => j.job === 'cancel_expired_orders')!.lastRun!.error).toBe(
      `boom ${hostile.clipboard}\n${hostile.forgedLine}`,
    );
  });
});
