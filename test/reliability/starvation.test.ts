// "One bad order never stops the run", at scale: thousands of due orders whose cancellation always
// fails (their book was renamed in the store: OA002) must not starve the good ones, nor cost every
// run the time of retrying them all, nor fill order_failure; and a waiting run must not walk them
// at each pass.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cancelExpiredOrders, getStatus, updateSettings } from '../../src/index.js';
import { statusText } from '../../src/cli/output.js';
import { conserved, seedBookstore, type TestDatabase } from '../helpers.js';
import { msToNextMinute, scheduledCall, scheduledConnections, until } from '../precision-support.js';
import {
  bulkOrders,
  expectConserved,
  expectInvariants,
  openFigures,
  reliabilityDatabase,
  type Shop,
  sleep,
  statesOf,
} from './support.js';

const tally = openFigures(import.meta.url);
const shop: Shop = { buyers: 10, stores: 4, books: 4 };
/** Failing orders: enough that retrying them all costs a run seconds, as 40,000 cost it 50 s. */
const failingCount = 3000;
/** The most failing orders a run retries (one batch of retries, of 100 at most). */
const retriesPerRun = 100;
let db: TestDatabase;
let firstRun: number;

beforeAll(async () => {
  db = await reliabilityDatabase();
  await seedBookstore(db.pool, { ...shop, balance: 1_000_000_000, stock: 1_000_000 });
  // The failing orders: placed at a store of their own (books reserved as usual), due for an hour,
  // before any other order; then the store renames the book, so that cancelling one cannot put its
  // book back (OA002: the store does not stock it) however often it is tried.
  await db.pool.query(`
    insert into "user" values ('sellerB', 0);
    insert into user_store values ('storeB', 'sellerB');
    insert into store values ('storeB', 'bookB', 1000000)`);
  await db.pool.query(
    `insert into new_order (order_id, user_id, store_id, pay_deadline)
     select 'bad' || i, 'buyer1', 'storeB', now() - interval '2 hours' + i * interval '1 millisecond'
       from generate_series(1, $1::integer) i`,
    [failingCount],
  );
  await db.pool.query(
    `insert into new_order_detail (order_id, book_id, count, price)
     select 'bad' || i, 'bookB', 1, 100 from generate_series(1, $1::integer) i`,
    [failingCount],
  );
  await db.pool.query(`update store set book_id = 'bookB (renamed)' where store_id = 'storeB'`);
  tally.faultsInjected += failingCount;
  // The first run meets every failing order once (what the tests below start from).
  await cancelExpiredOrders(db.pool, { asOf: new Date() });
  firstRun = await lastRunId();
}, 60_000);
afterAll(async () => db?.drop());

/** The run log's row of run id. */
async function run(id: number) {
  const { rows } = await db.pool.query<{ processed: string; failed: string; logged: string; error: string | null }>(
    `select r.processed, r.failed, r.error,
            (select count(*) from order_automation.order_failure f where f.run_id = r.id) as logged
       from order_automation.run r where r.id = $1`,
    [id],
  );
  const r = rows[0]!;
  return { processed: Number(r.processed), failed: Number(r.failed), logged: Number(r.logged), error: r.error };
}

async function lastRunId(): Promise<number> {
  return Number((await db.pool.query<{ id: string }>('select max(id) as id from order_automation.run')).rows[0]!.id);
}

/** Ten ordinary orders due now, their deadlines after every failing order's. */
async function goodOrders(prefix: string): Promise<void> {
  await bulkOrders(db.pool, { ...shop, prefix, count: 10, due: true });
  await db.pool.query(
    `update new_order set pay_deadline = now() - interval '1 minute' + substr(order_id, length($1) + 1)::integer * interval '1 millisecond'
      where starts_with(order_id, $1)`,
    [prefix],
  );
}

/** How often each failing order has been tried, as failing_order counts it: {failures: orders}. */
async function failuresPerOrder(): Promise<Record<string, number>> {
  const { rows } = await db.pool.query<{ failures: number; n: string }>(
    `select failures, count(*) as n from order_automation.failing_order
      where job = 'cancel_expired_orders' group by 1 order by 1`,
  );
  return Object.fromEntries(rows.map((r) => [String(r.failures), Number(r.n)]));
}

async function triedBy(runId: number): Promise<string[]> {
  const { rows } = await db.pool.query<{ order_id: string }>(
    `select order_id from order_automation.failing_order where job = 'cancel_expired_orders' and last_run_id = $1`,
    [runId],
  );
  return rows.map((r) => r.order_id);
}

describe('thousands of orders whose cancellation always fails', () => {
  test('a run processes the orders never tried before retrying failures, the next run retries other failures than the last one, and the failure log stays bounded', async () => {
    // The first run met every failing order once: each was recorded, none stopped the run.
    expect(await run(firstRun)).toMatchObject({ processed: 0, failed: failingCount, error: null });
    expect(await statesOf(db.pool, 'bad')).toEqual({ 0: failingCount });

    // Ten good orders come due. A run's time is short (max_run_time, at its least): retrying the
    // failures first, it would spend it all on them and never reach the good orders.
    await goodOrders('good_');
    const before = await conserved(db.pool);
    await updateSettings(db.pool, { maxRunTime: '1 second' });
    try {
      const started = Date.now();
      const { cancelled } = await cancelExpiredOrders(db.pool, { asOf: new Date() });
      const took = Date.now() - started;
      const second = await lastRunId();
      tally.expectNone('good orders left behind failing ones', 10 - cancelled, { cancelled, took });
      expect(await statesOf(db.pool, 'good_')).toEqual({ 4: 10 });
      // Every failing order was recorded once, with its error; the first run's log kept its first failures.
      expect((await run(firstRun)).logged).toBeLessThanOrEqual(100);
      const { rows: errors } = await db.pool.query<{ sqlstate: string; message: string }>(
        `select sqlstate, message from order_automation.failing_order where order_id = 'bad1'`,
      );
      expect(errors).toEqual([{ sqlstate: 'OA002', message: 'order bad1: store storeB does not stock book bookB' }]);
      // Then one batch of retries, the failures tried least recently.
      expect(await run(second)).toEqual({ processed: 10, failed: retriesPerRun, logged: retriesPerRun, error: null });
      const retriedBySecond = await triedBy(second);
      expect(retriedBySecond).toHaveLength(retriesPerRun);

      // The next run retries the next ones in line, not the same again.
      await cancelExpiredOrders(db.pool, { asOf: new Date() });
      const third = await lastRunId();
      expect(await run(third)).toEqual({ processed: 0, failed: retriesPerRun, logged: retriesPerRun, error: null });
      const retriedByThird = await triedBy(third);
      expect(retriedByThird).toHaveLength(retriesPerRun);
      tally.expectNone(
        'a failure retried again before the others had their turn',
        retriedByThird.filter((id) => retriedBySecond.includes(id)).length,
      );
      // However many runs follow: every failing order is retried once before any is retried twice.
      for (let i = 2; i < failingCount / retriesPerRun; i++) await cancelExpiredOrders(db.pool, { asOf: new Date() });
      expect(await failuresPerOrder()).toEqual({ 2: failingCount });
      await cancelExpiredOrders(db.pool, { asOf: new Date() });
      expect(await failuresPerOrder()).toEqual({ 2: failingCount - retriesPerRun, 3: retriesPerRun });
      // An order paid meanwhile is failing no more: its row goes (the next in line are checked first).
      await db.pool.query(`select order_automation.pay_order(id) from unnest($1::text[]) id`, [['bad201', 'bad202']]);
      await cancelExpiredOrders(db.pool, { asOf: new Date() });
      const { rows: paid } = await db.pool.query<{ order_id: string }>(
        `select order_id from order_automation.failing_order where order_id in ('bad201', 'bad202')`,
      );
      expect(paid).toEqual([]);
    } finally {
      await updateSettings(db.pool, { maxRunTime: '50 seconds' });
    }

    // Bounded: one failing_order row per order, and at most 100 order_failure rows a run.
    const { rows: sizes } = await db.pool.query<{ failing: string; logged: string; runs: string; most: string }>(`
      select (select count(*) from order_automation.failing_order) as failing,
             (select count(*) from order_automation.order_failure) as logged,
             (select count(*) from order_automation.run) as runs,
             (select max(n) from (select count(*) as n from order_automation.order_failure group by run_id) x) as most`);
    expect(Number(sizes[0]!.failing)).toBe(failingCount - 2);
    expect(Number(sizes[0]!.most)).toBeLessThanOrEqual(100);
    expect(Number(sizes[0]!.logged)).toBeLessThanOrEqual(100 * Number(sizes[0]!.runs));
    await expectInvariants(db.pool, tally);
    await expectConserved(db.pool, before, tally);

    // The status tells the shop: how many are failing, since when, and where to see them.
    const cancel = (await getStatus(db.pool)).jobs.find((j) => j.job === 'cancel_expired_orders')!;
    expect(cancel).toMatchObject({ dueNow: 0, failing: failingCount - 2 });
    expect(cancel.failingSince).toBeInstanceOf(Date);
    expect(statusText(await getStatus(db.pool), new Date())).toMatch(
      /^failing\s+2998 since .*see order_automation\.failing_order\)$/m,
    );
  }, 120_000);

  test('a waiting run meets its deadlines with thousands failing, retries one batch of them at the tick, and its passes never walk them', async () => {
    await updateSettings(db.pool, { precision: '100 milliseconds' });
    // Where the minute has room: the waiting run lasts until just past the next tick.
    if (msToNextMinute() < 15_000) await sleep(msToNextMinute() + 2_500);
    await bulkOrders(db.pool, { ...shop, prefix: 'soon_', count: 5, due: false });
    await db.pool.query(
      `update new_order set pay_deadline = now() + interval '1.5 seconds' + substr(order_id, 6)::integer * interval '200 milliseconds'
        where starts_with(order_id, 'soon_')`,
    );
    const readBefore = await dueIndexReads();
    const since = await lastRunId();
    const waiter = await scheduledCall(db.url, 'cancel_expired_orders');
    await until('the good orders to be cancelled', async () => (await statesOf(db.pool, 'soon_'))['4'] === 5, 15_000);
    await sleep(1_000); // ten more passes, with every failing order still due
    await db.pool.query(`update order_automation.job set active = false`);
    const done = await waiter.done;
    await db.pool.query(`update order_automation.job set active = true`);
    await updateSettings(db.pool, { precision: '1 second' });
    expect(done).not.toHaveProperty('error');

    // Each good order within the precision of its deadline (and a second of a busy machine).
    const { rows: late } = await db.pool.query<{ ms: number }>(
      `select (extract(epoch from cancelled_at - pay_deadline) * 1000)::float8 as ms from new_order where starts_with(order_id, 'soon_')`,
    );
    tally.expectNone(
      'good orders cancelled later than a second after their deadline',
      late.filter((r) => r.ms > 1_000).length,
      late,
    );
    // Some thirty passes, each an index probe that finds the next open deadline at once: the
    // failing orders, though due, are not in the index they probe.
    await until('the run to report its statistics', async () => (await scheduledConnections(db.pool)) === 0, 5_000);
    await sleep(1_500);
    const read = (await dueIndexReads()) - readBefore;
    tally.expectNone('index entries of failing orders read by the waiting run', read > 500 ? read : 0, { read });
    // The failures: one batch of retries at the tick, none at the passes; as many logged.
    const { rows: runs } = await db.pool.query<{ failed: string; logged: string }>(
      `select sum(r.failed) as failed,
              (select count(*) from order_automation.order_failure f where f.run_id > $1) as logged
         from order_automation.run r where r.id > $1`,
      [since],
    );
    expect(runs[0]).toEqual({ failed: String(retriesPerRun), logged: String(retriesPerRun) });
  }, 90_000);

  test('once the store has the book again, the next run cancels every failing order, batch after batch, and none is failing', async () => {
    await db.pool.query(`update store set book_id = 'bookB' where store_id = 'storeB'`);
    const before = await conserved(db.pool);
    const { rows } = await db.pool.query<{ n: string }>(
      `select count(*) as n from new_order where state = 0 and starts_with(order_id, 'bad')`,
    );
    const { cancelled } = await cancelExpiredOrders(db.pool, { asOf: new Date() });
    expect(cancelled).toBe(Number(rows[0]!.n));
    expect((await statesOf(db.pool, 'bad'))['0']).toBeUndefined();
    const cancel = (await getStatus(db.pool)).jobs.find((j) => j.job === 'cancel_expired_orders')!;
    expect(cancel).toMatchObject({ dueNow: 0, failing: 0, failingSince: null });
    expect(Number((await db.pool.query('select count(*) as n from order_automation.failing_order')).rows[0].n)).toBe(0);
    await expectInvariants(db.pool, tally);
    await expectConserved(db.pool, before, tally);
  }, 60_000);
});

/** Entries read from the index of unpaid orders by deadline, as the statistics count them. */
async function dueIndexReads(): Promise<number> {
  const { rows } = await db.pool.query<{ n: string }>(
    `select idx_tup_read as n from pg_stat_user_indexes where indexrelname = 'new_order_pay_deadline_due'`,
  );
  return Number(rows[0]!.n);
}
