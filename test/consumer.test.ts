// The package as someone else's project gets it: `npm pack`, the tarball installed into a fresh
// project with another pg 8.x minor and no @types/pg, type-checked with tsc --strict (NodeNext, ESM
// and CommonJS), then an ESM and a CommonJS script run against a test database: migrate, place, pay,
// the automations, status, a typed error and watchEvents, with a Pool of another copy of pg (so only
// its shape can tell it is a pool) and a Client. Skipped, saying so, only when the npm registry
// cannot be reached.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from './helpers.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
/** A pg 8.x other than ours, as a consumer pinned to an older minor has it. */
const consumerPg = '8.11.3';
const ours = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  devDependencies: Record<string, string>;
  scripts: Record<string, string>;
};

let project: string;
let db: TestDatabase;
let unreachable: string | null = null;

/** The environment of a child process: none of the suite's npm or database settings. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !/^npm_|^DATABASE_URL$|^ORDER_AUTOMATION_/i.test(key)),
  );
  return { ...clean, ...extra };
}

async function sh(command: string, args: string[], cwd: string, extra: Record<string, string> = {}) {
  return run(command, args, { cwd, env: env(extra), maxBuffer: 16 * 1024 * 1024, timeout: 120_000 });
}

beforeAll(async () => {
  try {
    await sh('npm', ['view', `pg@${consumerPg}`, 'version', '--prefer-online'], root);
  } catch (error) {
    unreachable = `the npm registry cannot be reached (${String((error as Error).message).split('\n')[0]}): the consumer test needs it to install pg@${consumerPg} and typescript`;
    return;
  }
  project = mkdtempSync(join(tmpdir(), 'oa-consumer-'));
  db = await createTestDatabase({ template: null });
}, 60_000);

afterAll(async () => {
  if (project) rmSync(project, { recursive: true, force: true });
  await db?.drop();
});

// What a TypeScript consumer writes, checked without @types/pg: every `@ts-expect-error` proves a
// type is real (were the package's types `any`, the line would not be an error and tsc would fail).
const checkEsm = `
import { cancelExpiredOrders, doctor, getOrder, getStatus, InsufficientStockError, migrate, OrderAutomationError,
  placeOrder, stateName, watchEvents, type Db, type DbPool, type DoctorReport, type OrderDetails } from 'order-automation';

export async function consume(pool: DbPool, url: string): Promise<number> {
  const db: Db = url;
  const { migrations } = await migrate(pool, { schedule: false, confirm: false, verbose: false });
  const order: OrderDetails = await getOrder(db, 'o1');
  // @ts-expect-error: a state is a name, not a number
  const code: number = order.state;
  // @ts-expect-error: an order id is a string
  await getOrder(db, 42);
  try {
    await placeOrder(pool, { orderId: 'o2', userId: 'u', storeId: 's', items: [{ bookId: 'b', count: 1, price: 10n }] });
  } catch (error) {
    if (error instanceof InsufficientStockError) return error.sqlstate === 'OA002' ? 1 : 0;
    if (error instanceof OrderAutomationError) return 2;
  }
  const report: DoctorReport = await doctor(db);
  const { cancelled } = await cancelExpiredOrders(db, { asOf: new Date() });
  const status = await getStatus(db);
  for await (const event of watchEvents(db, { signal: AbortSignal.timeout(10) })) {
    const name: string | null = event.to;
    void name;
  }
  return migrations.length + order.total + code + cancelled + status.jobs.length + (report.ok ? 1 : 0) + (stateName(0) ?? '').length;
}
`;
const checkCjs = `
import oa = require('order-automation');

export async function consume(url: string): Promise<string> {
  const order = await oa.getOrder(url, 'o1');
  // @ts-expect-error: total is a number
  const total: string = order.total;
  return order.state + total;
}
`;

// The scripts a consumer runs. ESM: a Pool of another copy of pg (pg-copy), so instanceof cannot tell it is a pool.
const esm = `
import pg from 'pg';
import copy from 'pg-copy';
import * as oa from 'order-automation';

const pool = new copy.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
const out = { anotherCopy: !(pool instanceof pg.Pool) };
out.migrations = (await oa.migrate(pool, { schedule: false })).migrations;
await pool.query(\`insert into "user" (user_id, balance) values ('buyer', 1000), ('seller', 0);
  insert into user_store values ('store', 'seller'); insert into store values ('store', 'book', 5)\`);

const stop = new AbortController();
// From the first event: it must come from the pool's server (not localhost:5432, pg's default).
const events = oa.watchEvents(pool, { afterId: 0, signal: stop.signal, pollIntervalMs: 200, reconnectDelayMs: 200,
  onReconnect: (error) => { out.watchError = String(error); stop.abort(); } });
const first = events.next();
await oa.placeOrder(pool, { orderId: 'esm-1', userId: 'buyer', storeId: 'store', items: [{ bookId: 'book', count: 2, price: 100 }] });
out.paid = (await oa.payOrder(pool, 'esm-1')).state;
await oa.placeOrder(pool, { orderId: 'esm-2', userId: 'buyer', storeId: 'store', items: [{ bookId: 'book', count: 1, price: 100 }] });
const event = await Promise.race([first, new Promise((r) => setTimeout(() => r({ value: 'no event within 15 s' }), 15000))]);
out.watched = event.value?.orderId ?? event.value;
stop.abort();
await events.return();
out.cancelled = (await oa.cancelExpiredOrders(pool, { asOf: new Date(Date.now() + 3600e3) })).cancelled;
out.status = (await oa.getStatus(pool)).jobs.map((j) => j.job);
const error = await oa.placeOrder(pool, { orderId: 'esm-3', userId: 'buyer', storeId: 'store', items: [{ bookId: 'book', count: 99, price: 1 }] }).catch((e) => e);
out.typedError = [error.constructor.name, error instanceof oa.OrderAutomationError, error.sqlstate];
const taken = await oa.placeOrder(pool, { orderId: 'esm-1', userId: 'buyer', storeId: 'store', items: [{ bookId: 'book', count: 1, price: 1 }] }).catch((e) => e);
out.taken = [taken.constructor.name, taken instanceof oa.InvalidArgumentError, taken.message];
out.order = await oa.getOrder(pool, 'esm-1');
await pool.end();
console.log(JSON.stringify(out));
`;

// CommonJS: require() of the package, a Client of the consumer's own pg.
const cjs = `
const pg = require('pg');
const oa = require('order-automation');

(async () => {
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await client.connect();
  const out = {};
  out.migrations = (await oa.migrate(client, { schedule: false })).migrations;
  const afterId = (await oa.readOrderEvents(client)).at(-1)?.id ?? 0;
  const stop = new AbortController();
  const events = oa.watchEvents(client, { afterId, signal: stop.signal, pollIntervalMs: 200, reconnectDelayMs: 200,
    onReconnect: (error) => { out.watchError = String(error); stop.abort(); } });
  const first = events.next();
  await oa.placeOrder(client, { orderId: 'cjs-1', userId: 'buyer', storeId: 'store', items: [{ bookId: 'book', count: 1, price: 50 }] });
  out.paid = (await oa.payOrder(client, 'cjs-1')).state;
  out.shipped = (await oa.shipOrder(client, 'cjs-1')).state;
  const event = await Promise.race([first, new Promise((r) => setTimeout(() => r({ value: 'no event within 15 s' }), 15000))]);
  out.watched = event.value?.orderId ?? event.value;
  stop.abort();
  await events.return();
  out.confirmed = (await oa.confirmShippedOrders(client, { asOf: new Date(Date.now() + 3600e3) })).confirmed;
  out.status = (await oa.getStatus(client)).jobs.length;
  const error = await oa.payOrder(client, 'no-such-order').catch((e) => e);
  out.typedError = [error.constructor.name, error instanceof oa.OrderAutomationError, error.sqlstate];
  out.state = oa.stateName(3);
  await client.end();
  console.log(JSON.stringify(out));
})().catch((error) => { console.error(error); process.exit(1); });
`;

describe('a consumer project', () => {
  test('installs the packed tarball with another pg 8.x, type-checks it strictly, and runs it from ESM and CommonJS', async (context) => {
    if (unreachable) context.skip(unreachable);
    expect(ours.scripts.prepare, 'a prepare script makes consumers build').toBeUndefined();

    const packed = await sh('npm', ['pack', '--json', '--pack-destination', project], root);
    const tarball = join(project, (JSON.parse(packed.stdout) as { filename: string }[])[0]!.filename);

    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
    await sh(
      'npm',
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--prefer-offline',
        '--loglevel=error',
        tarball,
        `pg@${consumerPg}`,
        `pg-copy@npm:pg@${consumerPg}`,
        `typescript@${ours.devDependencies.typescript}`,
        '@types/node@20',
      ],
      project,
    );
    const installed = join(project, 'node_modules');
    expect(JSON.parse(readFileSync(join(installed, 'pg/package.json'), 'utf8')).version).toBe(consumerPg);
    // One pg: the package uses the consumer's (a peer), no nested copy of its own.
    expect(existsSync(join(installed, 'order-automation/node_modules/pg'))).toBe(false);
    expect(existsSync(join(installed, '@types/pg'))).toBe(false);
    expect(existsSync(join(installed, 'order-automation/LICENSE'))).toBe(true);

    // Every source map points at a file the package ships.
    const dist = join(installed, 'order-automation/dist');
    const maps = readdirSync(dist, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js.map'));
    expect(maps.length).toBeGreaterThan(5);
    for (const map of maps) {
      for (const source of (JSON.parse(readFileSync(join(dist, map), 'utf8')) as { sources: string[] }).sources) {
        expect(existsSync(resolve(dirname(join(dist, map)), source)), `${map} -> ${source}`).toBe(true);
      }
    }

    writeFileSync(join(project, 'check.mts'), checkEsm);
    writeFileSync(join(project, 'check.cts'), checkCjs);
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          target: 'ES2022',
          skipLibCheck: false,
          noEmit: true,
          types: ['node'],
        },
        files: ['check.mts', 'check.cts'],
      }),
    );
    const tsc = await sh('node', ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], project).catch(
      (error: { stdout?: string }) => ({ stdout: error.stdout ?? String(error), failed: true }),
    );
    expect(tsc.stdout, 'tsc --strict in the consumer').toBe('');

    writeFileSync(join(project, 'esm.mjs'), esm);
    writeFileSync(join(project, 'cjs.cjs'), cjs);
    const database = { DATABASE_URL: db.url };
    const fromEsm = JSON.parse((await sh('node', ['esm.mjs'], project, database)).stdout);
    expect(fromEsm).toMatchObject({
      anotherCopy: true,
      migrations: expect.arrayContaining(['0001_core']),
      paid: 'paid',
      watched: 'esm-1',
      cancelled: 1,
      status: ['cancel_expired_orders', 'confirm_shipped_orders', 'purge_cancelled_orders', 'purge_history'],
      typedError: ['InsufficientStockError', true, 'OA002'],
      taken: ['OrderExistsError', true, 'order esm-1 already exists'],
      order: { orderId: 'esm-1', state: 'paid', total: 200, lines: [{ bookId: 'book', count: 2, price: 100 }] },
    });
    expect(fromEsm.watchError).toBeUndefined();

    const fromCjs = JSON.parse((await sh('node', ['cjs.cjs'], project, database)).stdout);
    expect(fromCjs).toEqual({
      migrations: [],
      paid: 'paid',
      shipped: 'shipped',
      watched: 'cjs-1',
      confirmed: 1,
      status: 4,
      typedError: ['OrderNotFoundError', true, 'OA005'],
      state: 'received',
    });

    // The command a consumer gets.
    const version = await sh(join(installed, '.bin/order-automation'), ['--version'], project);
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version);
  }, 240_000);
});
