// Settings and "bad settings, bad CLI arguments: a clear one-paragraph error, non-zero
// exit, nothing half-applied", tried hard: every setting out of range through the module and through
// plain SQL, a fuzzed command line, as_of at the ends of time, time zones across DST, extreme batches.
import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { main } from '../../src/cli/index.js';
import {
  cancelExpiredOrders,
  confirmShippedOrders,
  getSettings,
  InvalidSettingError,
  settingNames,
  updateSettings,
  type Settings,
} from '../../src/index.js';
import { seedBookstore, type TestDatabase } from '../helpers.js';
import {
  bulkOrders,
  expectInvariants,
  openFigures,
  reliabilityDatabase,
  type Shop,
  sleep,
  sqlstateOf,
  statesOf,
} from './support.js';
import { newClient } from '../setup/connections.js';

const tally = openFigures(import.meta.url);
const shop: Shop = { buyers: 6, stores: 3, books: 3 };
let db: TestDatabase;

beforeAll(async () => {
  db = await reliabilityDatabase();
  await seedBookstore(db.pool, { ...shop, balance: 1_000_000_000, stock: 1_000_000 });
});
afterAll(async () => db?.drop());

/** Everything a mistaken command could change, as one hash. */
async function fingerprint(pool: pg.Pool = db.pool): Promise<string> {
  const { rows } = await pool.query<{ md5: string }>(`
    select md5(concat_ws('|',
      (select string_agg(to_jsonb(s)::text, ',') from order_automation.settings s),
      (select string_agg(to_jsonb(s)::text, ',' order by s.store_id) from order_automation.store_settings s),
      (select string_agg(to_jsonb(j)::text, ',' order by j.job) from order_automation.job j),
      (select string_agg(o.order_id || ':' || o.state || ':' || coalesce(o.held_at::text, '') || ':' || o.pay_deadline
                         || ':' || coalesce(o.receipt_deadline::text, ''), ',' order by o.order_id) from new_order o),
      (select string_agg(u.user_id || ':' || u.balance, ',' order by u.user_id) from "user" u),
      (select string_agg(s.store_id || s.book_id || ':' || s.stock_level, ',' order by 1) from store s),
      (select count(*) from order_automation.order_event),
      (select count(*) from order_automation.run),
      (select count(*) from order_automation.order_failure))) as md5`);
  return rows[0]!.md5;
}

// ── settings ────────────────────────────────────────────────────────────────

/** Out-of-range values of every setting (NULL where a setting may not be switched off). */
const outOfRange: Record<string, (string | number | null)[]> = {
  payment_timeout: ['0', '0 seconds', '-1 minute', '-00:00:01', '1 day -24 hours', null],
  receipt_timeout: ['0', '-1 second', '-3 days', '00:00:00', null],
  batch_size: [0, -1, 1_000_001, 2_147_483_647, -2_147_483_648, null],
  max_run_time: ['0', '999 milliseconds', '1 day 00:00:01', '25 hours', '-1 second', '1 mon', null],
  payment_grace: ['0', '-5 minutes', null],
  receipt_extension: ['0', '-1 day', null],
  remind_before: ['0', '-1 minute'],
  purge_cancelled_after: ['-1 second', '-1 day'],
  history_retention: ['59 minutes', '0', '-1 day', null],
  // Added by the adopt change: who books, and five different state codes within smallint.
  bookkeeping: ['none', 'FULL', 'automatic', null],
  state_unpaid: [1, 4, 32_768, null],
  state_paid: [0, 2, -32_769, null],
  state_shipped: [1, 3, 100_000, null],
  state_received: [2, 4, null],
  state_cancelled: [0, 3, null],
  precision: ['0', '9 milliseconds', '-1 second', '61 seconds', '1 minute 00:00:00.001', '1 day', null],
};
/** Not values at all, for any setting. */
const nonsense = [
  'banana',
  '',
  ' ',
  "10 minutes'; drop table new_order; --",
  '1 fortnight',
  '9999999999 years',
  '1e400 seconds',
  'NaN',
  '💥',
  '10 minutes\u0000',
  '1 day) + (select 1',
  '1.5.5',
  '1_000',
];

describe('settings out of range', () => {
  test('every setting has out-of-range values to try: a new setting needs its own', async () => {
    const { rows } = await db.pool.query<{ column_name: string }>(`
      select column_name from information_schema.columns
       where table_schema = 'order_automation' and table_name = 'settings' and column_name <> 'singleton'`);
    expect(rows.map((r) => r.column_name).sort()).toEqual(Object.keys(outOfRange).sort());
  });

  test('every out-of-range or nonsense value is refused by plain SQL, with the setting named, and nothing changes', async () => {
    const before = await fingerprint();
    const { rows: types } = await db.pool.query<{ column_name: string; type: string }>(`
      select column_name, format_type(atttypid, atttypmod) as type from information_schema.columns c
        join pg_attribute a on a.attrelid = 'order_automation.settings'::regclass and a.attname = c.column_name
       where table_schema = 'order_automation' and table_name = 'settings'`);
    const typeOf = Object.fromEntries(types.map((t) => [t.column_name, t.type]));
    const accepted: string[] = [];
    for (const [column, values] of Object.entries(outOfRange)) {
      for (const value of [...values, ...nonsense]) {
        tally.inputsTried++;
        const error = await db.pool
          .query(`update order_automation.settings set ${pg.escapeIdentifier(column)} = $1::${typeOf[column]}`, [
            value === null ? null : String(value),
          ])
          .then(
            () => undefined,
            (e: unknown) => e as pg.DatabaseError,
          );
        if (error === undefined) {
          accepted.push(`${column} = ${JSON.stringify(value)}`);
          continue;
        }
        // A constraint names the setting; a value PostgreSQL cannot read is refused before any.
        expect(error.code, `${column} = ${JSON.stringify(value)}: ${error.message}`).toMatch(/^(23514|23502|22\w{3})$/);
        if (error.code === '23514') expect(error.constraint).toContain(column);
        if (error.code === '23502') expect(error.column).toBe(column);
      }
    }
    tally.expectNone('plain SQL accepts no out-of-range setting', accepted.length, accepted);
    expect(await fingerprint()).toBe(before);
  });

  test('every out-of-range or nonsense value is refused by updateSettings with InvalidSettingError, alone or beside a good one, and nothing changes', async () => {
    const before = await getSettings(db.pool);
    const keyOf = Object.fromEntries(
      Object.entries(settingNames).map(([key, column]) => [column, key as keyof Settings]),
    );
    const accepted: string[] = [];
    for (const [column, values] of Object.entries(outOfRange)) {
      const key = keyOf[column];
      if (!key) continue; // not (yet) in the TypeScript module
      const candidates =
        column === 'batch_size'
          ? [
              ...values.filter((v) => v !== null),
              1.5,
              Number.NaN,
              Number.POSITIVE_INFINITY,
              2 ** 31,
              -(2 ** 53),
              Number.MAX_VALUE,
            ]
          : [...values.filter((v) => v !== null), ...nonsense];
      for (const value of candidates) {
        for (const company of [{}, { paymentTimeout: '11 minutes' }]) {
          tally.inputsTried++;
          const error = await updateSettings(db.pool, { ...company, [key]: value } as Partial<Settings>).then(
            () => undefined,
            (e: unknown) => e,
          );
          if (error === undefined) {
            accepted.push(`${key}: ${JSON.stringify(value)}`);
            await updateSettings(db.pool, before);
            continue;
          }
          expect(error, `${key}: ${JSON.stringify(value)}`).toBeInstanceOf(InvalidSettingError);
          expect((error as Error).message).not.toMatch(/\n\s+at /);
        }
      }
    }
    tally.expectNone('updateSettings accepts no out-of-range setting', accepted.length, accepted);
    expect(await getSettings(db.pool)).toEqual(before);
  });

  test('the one settings row can be neither deleted, truncated, doubled nor unflagged', async () => {
    const client = await db.pool.connect();
    const allowed: string[] = [];
    try {
      for (const statement of [
        'delete from order_automation.settings',
        'truncate order_automation.settings',
        'insert into order_automation.settings default values',
        'insert into order_automation.settings (singleton) values (false)',
        'update order_automation.settings set singleton = false',
      ]) {
        tally.inputsTried++;
        // Tried in a transaction rolled back either way: a breach must not break the other tests.
        await client.query('begin');
        const refused = await client.query(statement).then(
          () => false,
          () => true,
        );
        if (!refused) {
          const { rows } = await client.query<{ n: string }>('select count(*) n from order_automation.settings');
          allowed.push(`${statement} (leaves ${rows[0]!.n} rows)`);
        }
        await client.query('rollback');
      }
    } finally {
      client.release();
    }
    tally.expectNone('the settings table keeps exactly one row', allowed.length, allowed);
  });
});

// ── the command line ────────────────────────────────────────────────────────

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(argv: string[]): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, {
    stdout: { write: (t: string) => (stdout += t) },
    stderr: { write: (t: string) => (stderr += t) },
  });
  return { code, stdout, stderr };
}

/** Values a careless or hostile user types where a value goes. */
const hostile = [
  '',
  ' ',
  '-',
  '--',
  '-1',
  '0',
  '-0',
  '+1',
  '1.5',
  '1e3',
  '0x10',
  '1_000',
  'NaN',
  'Infinity',
  '-Infinity',
  '2147483648',
  '9223372036854775808',
  `1${'0'.repeat(400)}`,
  "'; drop table new_order; --",
  "' or '1'='1",
  '"; drop schema order_automation cascade; --',
  '$1',
  '%s%s%n',
  '\\',
  '${process.exit(1)}',
  '$(id)',
  '💥',
  'ü',
  'Ω≈ç√∫',
  '\u202Eevil',
  'a\nb',
  'line\r\nbreak',
  '\u001b[31mred\u001b[0m',
  '\u0000',
  '\t',
  '__proto__',
  'constructor',
  'toString',
  'undefined',
  'true',
  '{}',
  '[]',
  'now',
  'today',
  'infinity',
  '-infinity',
  'epoch',
  '2030-02-30',
  '2030-02-31T00:00:00Z',
  '2030-13-01',
  '2030-00-10',
  '2030-01-01T25:00:00Z',
  '2030-01-01T12:00:00+99:00',
  '2030-01-01 nonsense',
  '2030-01-01; drop table x',
  '99999-01-01',
  '0000-00-00',
  '10 minutes; drop table x',
  '1 day) + (select 1',
  '-1 minute',
  '0 seconds',
  '1 fortnight',
  '9999999999 years',
];
const huge = 'x'.repeat(100_000);

/** Command lines with a slot for a value; `valid` says whether PostgreSQL (or the spec) would take it. */
interface Template {
  argv: (v: string) => string[];
  valid?: (v: string, db: pg.Pool) => Promise<boolean>;
}

const readsOnly = (argv: string[]) =>
  ['status', 'events'].includes(argv[0]!) ||
  (argv[0] === 'settings' && argv.length === 1) ||
  (argv[0] === 'store-settings' && argv.length === 1);

/** Whether PostgreSQL takes `value` in `text` (tried in a transaction rolled back). */
async function sqlAccepts(db: pg.Pool, text: string, value: string): Promise<boolean> {
  const client = await db.connect();
  try {
    await client.query('begin');
    return await client.query(text, [value]).then(
      () => true,
      () => false,
    );
  } finally {
    await client.query('rollback').catch(() => undefined);
    client.release();
  }
}

const templates: Template[] = [
  { argv: (v) => [v] },
  { argv: (v) => [v, 'status'] },
  { argv: (v) => ['status', v] },
  { argv: (v) => ['migrate', v] },
  { argv: (v) => ['status', '--as-of', v] },
  { argv: (v) => ['run', v] },
  { argv: (v) => ['run', 'cancel', v] },
  { argv: (v) => ['run', 'cancel', '--as-of', v], valid: (v, db) => sqlAccepts(db, 'select $1::timestamptz', v) },
  { argv: (v) => ['run', 'confirm', `--as-of=${v}`], valid: (v, db) => sqlAccepts(db, 'select $1::timestamptz', v) },
  {
    argv: (v) => ['run', 'cancel', '--batch-size', v],
    valid: async (v) => /^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 1_000_000,
  },
  {
    argv: (v) => ['run', 'confirm', `--batch-size=${v}`],
    valid: async (v) => /^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 1_000_000,
  },
  ...Object.keys(outOfRange).map((column): Template => ({
    argv: (v) => ['settings', 'set', `${column}=${v}`],
    valid: (v, db) =>
      sqlAccepts(
        db,
        // The adopt change added a text setting and smallint ones beside the intervals and batch_size.
        `update order_automation.settings set ${column} = $1::${column === 'batch_size' ? 'integer' : column.startsWith('state_') ? 'smallint' : column === 'bookkeeping' ? 'text' : 'interval'}`,
        v,
      ),
  })),
  { argv: (v) => ['settings', 'set', `${v}=1`] },
  { argv: (v) => ['settings', 'set', v] },
  { argv: (v) => ['settings', v] },
  {
    argv: (v) => ['settings', 'set', 'payment_timeout=20 minutes', `batch_size=${v}`],
    valid: (v, db) => sqlAccepts(db, 'select 1 / ($1::integer between 1 and 1000000)::integer', v),
  },
  {
    argv: (v) => ['store-settings', 'set', 'store1', `payment_timeout=${v}`],
    valid: (v, db) =>
      sqlAccepts(
        db,
        `insert into order_automation.store_settings as s (store_id, payment_timeout) values ('store1', $1::interval)
                                  on conflict (store_id) do update set payment_timeout = excluded.payment_timeout`,
        v,
      ),
  },
  { argv: (v) => ['store-settings', 'set', v, 'payment_timeout=1 hour'] },
  { argv: (v) => ['store-settings', 'clear', v] },
  { argv: (v) => ['schedule', 'set', 'cancel', v] },
  { argv: (v) => ['schedule', 'set', v, '* * * * *'] },
  { argv: (v) => ['schedule', 'pause', v] },
  { argv: (v) => ['hold', v, 'a dispute'] },
  { argv: (v) => ['release', v] },
  { argv: (v) => ['events', '--order', v] },
  { argv: (v) => ['events', '--after', v] },
  { argv: (v) => ['events', '--limit', v] },
];

// Control characters that let an echoed argument break the paragraph or drive the terminal (ESC).
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const controlCharacters = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

/** Runs every value through each template against `fuzzDb`, pushing what went wrong to `breaches`. */
async function fuzzLane(fuzzDb: TestDatabase, laneTemplates: Template[], breaches: string[]): Promise<void> {
  let before = await fingerprint(fuzzDb.pool);
  for (const template of laneTemplates) {
    let unchecked = 0;
    for (const value of [...hostile, ...(template === templates[0] || template === templates[7] ? [huge] : [])]) {
      const argv = [...template.argv(value), '--database-url', fuzzDb.url];
      tally.inputsTried++;
      const shown = JSON.stringify(argv.slice(0, -2)).slice(0, 200);
      const { code, stdout, stderr } = await cli(argv);
      // A mistake in the command line (exit 2) is checked with the rest of its template, below.
      const after = code === 2 ? before : await fingerprint(fuzzDb.pool);
      if (code === 2) unchecked++;
      if (code === 0) {
        // Accepted: a read, a harmless no-op, or a value PostgreSQL itself takes; nothing else.
        const valid = template.valid ? await template.valid(value, fuzzDb.pool) : false;
        if (after !== before && !valid) breaches.push(`${shown}: exit 0 and the database changed`);
        else if (after === before && !valid && !readsOnly(argv) && template.argv('x')[0] !== 'store-settings') {
          breaches.push(`${shown}: exit 0 for an argument it should refuse`);
        }
        before = after;
        continue;
      }
      if (code !== 1 && code !== 2) breaches.push(`${shown}: exit ${code}`);
      if (after !== before) breaches.push(`${shown}: refused (exit ${code}) but the database changed`);
      before = after;
      const lines = stderr
        .trimEnd()
        .split('\n')
        .filter((line) => !/^Run order-automation( \w[\w-]*)? --help/.test(line));
      if (lines.length !== 1)
        breaches.push(`${shown}: ${lines.length} lines, not one paragraph: ${JSON.stringify(stderr.slice(0, 300))}`);
      if (/^\s+at /m.test(stderr) || /unexpected error/.test(stderr))
        breaches.push(`${shown}: a stack trace: ${stderr.slice(0, 300)}`);
      if (controlCharacters.test(stderr))
        breaches.push(`${shown}: raw control characters echoed: ${JSON.stringify(stderr.slice(0, 200))}`);
      if (stdout !== '') breaches.push(`${shown}: refused but printed a result`);
    }
    if (unchecked > 0 && (await fingerprint(fuzzDb.pool)) !== before) {
      breaches.push(
        `${JSON.stringify(template.argv('…'))}: a command line refused as a mistake (exit 2) changed the database`,
      );
      before = await fingerprint(fuzzDb.pool);
    }
  }
}

describe('the command line, fuzzed', () => {
  test('nonsense and hostile arguments get exit 1 or 2 and one paragraph without a stack trace, and change nothing', async () => {
    const saved = process.env.ORDER_AUTOMATION_SCHEDULE;
    process.env.ORDER_AUTOMATION_SCHEDULE = 'off'; // a mistaken migrate must not schedule jobs in the shared pg_cron
    const breaches: string[] = [];
    try {
      // Four lanes side by side, each with a database of its own to spoil, so each change is traced to its command line.
      const lanes = 4;
      await Promise.all(
        Array.from({ length: lanes }, async (_, lane) => {
          const fuzzDb = await reliabilityDatabase();
          try {
            await seedBookstore(fuzzDb.pool, { ...shop, balance: 1_000_000_000, stock: 1_000_000 });
            // Something for a mistaken command to destroy: unpaid and shipped orders, due and not due.
            await bulkOrders(fuzzDb.pool, { ...shop, prefix: 'keep_due_', count: 20, due: true });
            await bulkOrders(fuzzDb.pool, { ...shop, prefix: 'keep_later_', count: 20, due: false });
            await bulkOrders(fuzzDb.pool, { ...shop, prefix: 'keep_shipped_', count: 20, due: true, state: 'shipped' });
            await fuzzLane(
              fuzzDb,
              templates.filter((_, i) => i % lanes === lane),
              breaches,
            );
          } finally {
            await fuzzDb.drop();
          }
        }),
      );
    } finally {
      if (saved === undefined) delete process.env.ORDER_AUTOMATION_SCHEDULE;
      else process.env.ORDER_AUTOMATION_SCHEDULE = saved;
    }
    if (process.env.ORDER_AUTOMATION_FUZZ_REPORT)
      writeFileSync(process.env.ORDER_AUTOMATION_FUZZ_REPORT, breaches.join('\n'));
    tally.expectNone(
      'the command line refuses bad input cleanly and changes nothing',
      breaches.length,
      breaches.slice(0, 40),
    );
    // A bound for a hang, not a measure of speed: 80-95 s on two cores shared with other test runs,
    // over 120 s when they are many.
  }, 300_000);

  test('an unreachable database or a wrong URL is exit 1 or 2 in one paragraph that never shows the password', async () => {
    const breaches: string[] = [];
    for (const url of [
      'postgres://someone:s3cr3t-pass@127.0.0.1:1/shop',
      'postgres://someone:s3cr3t-pass@nonexistent.invalid/shop',
      'mysql://someone:s3cr3t-pass@127.0.0.1/shop',
      'not a url s3cr3t-pass',
      `postgres://someone:s3cr3t-pass@${new URL(db.url).host}/no_such_database`,
    ]) {
      for (const argv of [['status'], ['run', 'cancel'], ['settings', 'set', 'batch_size=5']]) {
        tally.inputsTried++;
        const { code, stderr } = await cli([...argv, '--database-url', url]);
        if (code !== 1 && code !== 2) breaches.push(`${url} ${argv.join(' ')}: exit ${code}`);
        if (stderr.includes('s3cr3t')) breaches.push(`${url} ${argv.join(' ')}: the password is shown`);
        if (
          stderr
            .trimEnd()
            .split('\n')
            .filter((l) => !l.startsWith('Run order-automation')).length !== 1
        )
          breaches.push(`${argv.join(' ')}: not one paragraph`);
      }
    }
    tally.expectNone('connection failures are reported cleanly', breaches.length, breaches);
  }, 60_000);
});

// ── time ────────────────────────────────────────────────────────────────────

describe('time', () => {
  test('as_of at the ends of time, in any time zone, processes exactly what is due then', async () => {
    await cancelExpiredOrders(db.pool, { asOf: new Date() });
    await confirmShippedOrders(db.pool, { asOf: new Date() });
    let n = 0;
    const fresh = async () => {
      const prefix = `ends${++n}_`;
      await bulkOrders(db.pool, { ...shop, prefix: `${prefix}u_`, count: 3, due: false });
      await bulkOrders(db.pool, { ...shop, prefix: `${prefix}s_`, count: 3, due: false, state: 'shipped' });
      return prefix;
    };
    const run = async (asOf: string) => {
      const client = await db.pool.connect();
      try {
        const cancelled = Number(
          (
            await client.query<{ cancelled: string }>(
              'call order_automation.cancel_expired_orders(as_of => $1::timestamptz)',
              [asOf],
            )
          ).rows[0]!.cancelled,
        );
        const confirmed = Number(
          (
            await client.query<{ confirmed: string }>(
              'call order_automation.confirm_shipped_orders(as_of => $1::timestamptz)',
              [asOf],
            )
          ).rows[0]!.confirmed,
        );
        const { rows } = await client.query<{ same: boolean }>(
          `select bool_and(as_of = $1::timestamptz) same from (select as_of from order_automation.run order by id desc limit 2) r`,
          [asOf],
        );
        expect(rows[0]!.same, `the runs record as_of ${asOf}`).toBe(true);
        return { cancelled, confirmed };
      } finally {
        client.release();
      }
    };
    let prefix = await fresh();
    for (const past of [
      '0001-01-01 00:00:00+14',
      '0001-01-01 00:00:00-12',
      '4713-01-01 00:00:00+00 BC',
      '-infinity',
      '1970-01-01 00:00:00+00',
    ]) {
      tally.inputsTried++;
      expect(await run(past), past).toEqual({ cancelled: 0, confirmed: 0 });
    }
    expect(await statesOf(db.pool, prefix)).toEqual({ 0: 3, 2: 3 });
    for (const future of [
      '9999-12-31 23:59:59.999999+14',
      '9999-12-31 23:59:59.999999-12',
      'infinity',
      '294276-12-31 23:59:59+00',
    ]) {
      tally.inputsTried++;
      expect(await run(future), future).toEqual({ cancelled: 3, confirmed: 3 });
      expect(await statesOf(db.pool, prefix)).toEqual({ 3: 3, 4: 3 });
      prefix = await fresh();
    }
    // The same through the module (JavaScript dates of year 1 and 9999) and the command line.
    tally.inputsTried += 4;
    expect((await cancelExpiredOrders(db.pool, { asOf: new Date('0001-01-01T00:00:00Z') })).cancelled).toBe(0);
    expect((await confirmShippedOrders(db.pool, { asOf: new Date('0001-01-01T00:00:00+14:00') })).confirmed).toBe(0);
    expect(
      await cli(['run', 'cancel', '--as-of', '0001-01-01T00:00:00+14:00', '--database-url', db.url]),
    ).toMatchObject({ code: 0, stdout: 'cancelled 0 orders\n' });
    expect((await cancelExpiredOrders(db.pool, { asOf: new Date('9999-12-31T23:59:59.999-12:00') })).cancelled).toBe(3);
    expect(
      await cli(['run', 'confirm', '--as-of', '9999-12-31T23:59:59+14:00', '--database-url', db.url]),
    ).toMatchObject({ code: 0, stdout: 'confirmed 3 orders\n' });
    expect(await statesOf(db.pool, prefix)).toEqual({ 3: 3, 4: 3 });
    await expectInvariants(db.pool, tally);
  });

  test('a session in America/New_York (or any zone) across a DST change computes the same deadlines as one in UTC', async () => {
    const zones = [
      'UTC',
      'America/New_York',
      'Europe/Berlin',
      'Australia/Lord_Howe',
      'Pacific/Chatham',
      'Asia/Kathmandu',
      'America/St_Johns',
    ];
    // Half an hour before and a day before the changes of 2024 in New York and Berlin.
    const instants = [
      '2024-03-10 06:30:00+00',
      '2024-03-09 12:00:00+00',
      '2024-11-03 05:30:00+00',
      '2024-11-02 12:00:00+00',
      '2024-03-31 00:30:00+00',
      '2024-10-26 12:00:00+00',
    ];
    const timeouts = ['10 minutes', '90 minutes', '1 day', '3 days', '7 days'];
    const before = await getSettings(db.pool);
    const disagreements: string[] = [];
    const clients = await Promise.all(
      zones.map(async (zone) => {
        const client = newClient({ connectionString: db.url });
        await client.connect();
        await client.query(`select set_config('TimeZone', $1, false)`, [zone]);
        return client;
      }),
    );
    try {
      let n = 0;
      for (const timeout of timeouts) {
        await updateSettings(db.pool, { paymentTimeout: timeout, receiptTimeout: timeout });
        for (const instant of instants) {
          const seen = new Map<string, string[]>();
          for (const [z, client] of clients.entries()) {
            tally.inputsTried++;
            const id = `dst${++n}`;
            // Placed at the instant (pay deadline from the setting); shipped at it (receipt deadline);
            // the receipt extended by the same span (extend_receipt).
            await client.query(
              `insert into new_order (order_id, user_id, store_id, created_at) values ($1, 'buyer1', 'store1', $2)`,
              [id, instant],
            );
            await client.query(`insert into new_order_detail values ($1, 'book1', 1, 10)`, [id]);
            await client.query('update new_order set state = 1 where order_id = $1', [id]);
            await client.query('update new_order set state = 2, shipped_at = $2 where order_id = $1', [id, instant]);
            const pay = await client.query<{ s: string; r: string }>(
              `
              select extract(epoch from pay_deadline - created_at)::text s, extract(epoch from receipt_deadline - shipped_at)::text r
                from new_order where order_id = $1`,
              [id],
            );
            await client.query('update new_order set receipt_deadline = $2 where order_id = $1', [id, instant]);
            const ext = (
              await client.query<{ e: string }>(
                `
              select extract(epoch from (order_automation.extend_receipt($1, $2::interval)).receipt_deadline - $3::timestamptz)::text e`,
                [id, timeout, instant],
              )
            ).rows[0];
            const key = `pay ${pay.rows[0]!.s} s, receipt ${pay.rows[0]!.r} s, extension ${ext!.e} s`;
            seen.set(key, [...(seen.get(key) ?? []), zones[z]!]);
            await client.query('update new_order set state = 3 where order_id = $1', [id]);
          }
          if (seen.size > 1)
            disagreements.push(
              `${timeout} from ${instant}: ${[...seen].map(([k, v]) => `${v.join(', ')}: ${k}`).join(' / ')}`,
            );
        }
      }
    } finally {
      await Promise.all(clients.map((c) => c.end()));
      await updateSettings(db.pool, before);
    }
    tally.expectNone(
      'deadlines do not depend on the session time zone',
      disagreements.length,
      disagreements.slice(0, 6),
    );
  });
});

// ── batch sizes ─────────────────────────────────────────────────────────────

describe('batch sizes', () => {
  test('batch sizes of 1 and 1,000,000, from the argument, the setting and the command line, drain the same orders; 0 and 1,000,001 change nothing', async () => {
    const batches = async (prefix: string) =>
      Number(
        (
          await db.pool.query<{ n: string }>(
            `
      select count(distinct at) n from order_automation.order_event where starts_with(order_id, $1) and cause = 'payment_timeout'`,
            [prefix],
          )
        ).rows[0]!.n,
      );
    await cancelExpiredOrders(db.pool, { asOf: new Date() });

    await bulkOrders(db.pool, { ...shop, prefix: 'one_arg_', count: 120, due: true });
    expect((await cancelExpiredOrders(db.pool, { batchSize: 1 })).cancelled).toBe(120);
    expect(await batches('one_arg_')).toBe(120); // one transaction per order

    const before = await getSettings(db.pool);
    await bulkOrders(db.pool, { ...shop, prefix: 'one_set_', count: 60, due: true });
    await updateSettings(db.pool, { batchSize: 1 });
    expect((await cancelExpiredOrders(db.pool)).cancelled).toBe(60);
    expect(await batches('one_set_')).toBe(60);
    await bulkOrders(db.pool, { ...shop, prefix: 'one_cli_', count: 40, due: true });
    expect(await cli(['run', 'cancel', '--database-url', db.url])).toMatchObject({
      code: 0,
      stdout: 'cancelled 40 orders\n',
    });
    expect(await batches('one_cli_')).toBe(40);

    await updateSettings(db.pool, before);
    await bulkOrders(db.pool, { ...shop, prefix: 'million_cli_', count: 2000, due: true, state: 'shipped' });
    expect(await cli(['run', 'confirm', '--batch-size', '1000000', '--database-url', db.url])).toMatchObject({
      code: 0,
      stdout: 'confirmed 2000 orders\n',
    });
    expect(await statesOf(db.pool, 'million_cli_')).toEqual({ 3: 2000 });

    await bulkOrders(db.pool, { ...shop, prefix: 'refused_', count: 5, due: true });
    const unchanged = await fingerprint();
    for (const batchSize of [0, -1, 1_000_001, 2 ** 31]) {
      tally.inputsTried += 2;
      const error = await cancelExpiredOrders(db.pool, { batchSize }).catch((e: unknown) => e);
      expect(sqlstateOf(error), String(batchSize)).toMatch(/^(OA006|22003)$/);
      const { code } = await cli(['run', 'cancel', '--batch-size', String(batchSize), '--database-url', db.url]);
      expect([1, 2]).toContain(code);
    }
    expect(await fingerprint()).toBe(unchanged);
    await expectInvariants(db.pool, tally);
  }, 60_000);
  test('a batch of 1,000,000 over 20,000 orders that arrived after a purge is one pass: seconds, not minutes', async () => {
    // A shop that purges cancelled orders at once (the reference behaviour): its order tables were
    // emptied and analyzed in that state, then 20,000 orders arrive and are run in one batch before
    // autovacuum looks again. One set-based pass all the same, so seconds; bounded, so that a plan
    // that turns quadratic on statistics that undercount fails here instead of hanging.
    const fresh = await reliabilityDatabase();
    const runner = newClient({ connectionString: fresh.url });
    try {
      await seedBookstore(fresh.pool, { ...shop, balance: 1_000_000_000, stock: 1_000_000 });
      await bulkOrders(fresh.pool, { ...shop, prefix: 'purged_', count: 2000, due: true });
      await updateSettings(fresh.pool, { purgeCancelledAfter: '0 seconds' });
      await cancelExpiredOrders(fresh.pool);
      expect(Number((await fresh.pool.query<{ n: string }>('select count(*) n from new_order')).rows[0]!.n)).toBe(0);
      await fresh.pool.query('analyze new_order, new_order_detail');
      await updateSettings(fresh.pool, { purgeCancelledAfter: null });
      await bulkOrders(fresh.pool, { ...shop, prefix: 'million_', count: 20_000, due: true });
      await updateSettings(fresh.pool, { batchSize: 1_000_000 });
      await runner.connect();
      const pid = (await runner.query<{ pid: number }>('select pg_backend_pid() pid')).rows[0]!.pid;
      const started = Date.now();
      const call = runner.query<{ cancelled: string }>('call order_automation.cancel_expired_orders()').then(
        (r) => Number(r.rows[0]!.cancelled),
        (error: unknown) => error,
      );
      const outcome = await Promise.race([call, sleep(20_000).then(() => 'slow' as const)]);
      if (outcome === 'slow') {
        await fresh.pool.query('select pg_cancel_backend($1)', [pid]);
        await call;
      }
      tally.expectNone(
        'one batch of 20,000 orders is one pass: done in seconds, not minutes',
        outcome === 'slow' ? 1 : 0,
        { elapsedMs: Date.now() - started },
      );
      expect(outcome).toBe(20_000);
      const { rows } = await fresh.pool.query<{ n: string }>(`
        select count(distinct at) n from order_automation.order_event where starts_with(order_id, 'million_') and cause = 'payment_timeout'`);
      expect(rows[0]!.n).toBe('1'); // one transaction for all of them
    } finally {
      await runner.end().catch(() => undefined);
      await fresh.drop();
    }
  }, 60_000);
});
