// Everything else of the package on an adopted database, in both bookkeepings: status, history, holds,
// payment grace, reminders, per-store timeouts, purging, the event feed and the CLI; the state codes
// changed after an install; a store with two owners in the app's user_store.
import pg from 'pg';
import { afterAll, describe, expect, test } from 'vitest';
import {
  cancelExpiredOrders,
  confirmShippedOrders,
  doctor,
  getOrder,
  getStatus,
  holdOrder,
  InvalidSettingError,
  InvalidTransitionError,
  migrate,
  payOrder,
  paymentStarted,
  placeOrder,
  purgeCancelledOrders,
  readOrderEvents,
  releaseOrder,
  setStoreSettings,
  updateSettings,
  watchEvents,
  type OrderEvent,
} from '../src/index.js';
import { main } from '../src/cli/index.js';
import { App, appConserved, appStates, createApp } from './adopt-app.js';
import { createTestDatabase, one, seedBookstore, type TestDatabase } from './helpers.js';

const created: TestDatabase[] = [];
afterAll(async () => {
  await Promise.all(created.map((db) => db.drop()));
});

const minute = 60_000;
const later = (ms: number) => new Date(Date.now() + ms);

async function adopted(bookkeeping: 'full' | 'automation') {
  const db = await createTestDatabase({ template: null });
  created.push(db);
  const shop = await createApp(db.pool);
  await migrate(db.url, {
    adopt: true,
    schedule: false,
    bookkeeping,
    stateCodes: { cancelled: appStates.cancelled },
  });
  const app = new App(db.pool, { books: bookkeeping === 'automation' ? 'app' : 'database' });
  return { db, shop, app };
}

const stateOf = async (db: TestDatabase, id: string) =>
  (await one<{ state: number }>(db.pool, 'select state from new_order where order_id = $1', [id])).state;

describe.each(['automation', 'full'] as const)('on an adopted database (%s bookkeeping)', (bookkeeping) => {
  test('status, history, holds, payment grace, reminders and per-store timeouts follow the app codes', async () => {
    const { db, shop, app } = await adopted(bookkeeping);
    const buyer = shop.buyers[0]!;
    await setStoreSettings(db.pool, 'store2', { paymentTimeout: '30 minutes' });
    await updateSettings(db.pool, { remindBefore: '5 minutes' });
    for (const [id, store] of [
      ['h1', 'store1'],
      ['g1', 'store1'],
      ['c1', 'store1'],
      ['s2', 'store2'],
    ] as const) {
      expect(await app.place(id, buyer, store, [{ book: 'book1', count: 1 }])).toBe('done');
    }
    // Per-store timeouts: store2's orders get 30 minutes.
    const timeouts = await db.pool.query<{ order_id: string; minutes: number }>(
      `select order_id, extract(epoch from pay_deadline - created_at)::int / 60 as minutes from new_order order by 1`,
    );
    expect(Object.fromEntries(timeouts.rows.map((r) => [r.order_id, r.minutes]))).toEqual({
      c1: 10,
      g1: 10,
      h1: 10,
      s2: 30,
    });
    // Status: three orders due in 11 minutes, one held.
    await holdOrder(db.pool, 'h1', 'the buyer disputes it');
    const status = await getStatus(db.pool);
    const cancelJob = () => status.jobs.find((j) => j.job === 'cancel_expired_orders')!;
    expect(cancelJob()).toMatchObject({ dueNow: 0, held: 1 });
    const due = await db.pool.query<{ due_now: string; held: string }>(
      `select due_now, held from order_automation.job_status($1) where job = 'cancel_expired_orders'`,
      [later(11 * minute)],
    );
    expect(due.rows[0]).toEqual({ due_now: '2', held: '1' });
    // Payment grace: g1 is safe for an hour; a payment cannot start on a cancelled order.
    const graced = await paymentStarted(db.pool, 'g1', '1 hour');
    expect(graced.state).toBe('unpaid');
    // Reminders at 6 minutes: c1 (due in 10); then the run at 11 minutes cancels c1 only.
    await cancelExpiredOrders(db.pool, { asOf: later(6 * minute) });
    expect((await readOrderEvents(db.pool, { orderId: 'c1' })).map((e) => e.cause)).toEqual([
      'sql',
      'payment_due_soon',
    ]);
    expect((await cancelExpiredOrders(db.pool, { asOf: later(11 * minute) })).cancelled).toBe(1);
    expect(await stateOf(db, 'c1')).toBe(appStates.cancelled);
    expect(await stateOf(db, 'g1')).toBe(appStates.unpaid);
    expect(await stateOf(db, 'h1')).toBe(appStates.unpaid);
    await expect(paymentStarted(db.pool, 'c1')).rejects.toBeInstanceOf(InvalidTransitionError);
    // History with the app's codes: -1 is cancelled.
    const history = await readOrderEvents(db.pool, { orderId: 'c1' });
    expect(history.at(-1)).toMatchObject({ from: 'unpaid', to: 'cancelled', toState: -1, cause: 'payment_timeout' });
    // Holds: released, h1's countdown resumes; held time does not count.
    const released = await releaseOrder(db.pool, 'h1');
    expect(released.heldAt).toBeNull();
    expect(released.payDeadline!.getTime()).toBeGreaterThan(Date.now() + 9 * minute);
  });

  test('the automation confirms with the app codes, purges cancelled orders with their lines, and the event feed names the states', async () => {
    const { db, shop, app } = await adopted(bookkeeping);
    const buyer = shop.buyers[1]!;
    const before = await appConserved(db.pool);
    const seen: OrderEvent[] = [];
    const stop = new AbortController();
    const watching = (async () => {
      for await (const event of watchEvents(db.pool, { afterId: 0, signal: stop.signal, pollIntervalMs: 100 })) {
        seen.push(event);
        if (seen.some((e) => e.orderId === 'w2' && e.to === 'received')) stop.abort();
      }
    })();
    await app.place('w1', buyer, 'store1', [{ book: 'book2', count: 2 }]);
    await app.cancel('w1');
    await app.place('w2', buyer, 'store1', [{ book: 'book3', count: 1 }]);
    await app.pay('w2');
    await app.ship('w2');
    expect((await confirmShippedOrders(db.pool, { asOf: later(2 * minute) })).confirmed).toBe(1);
    await Promise.race([watching, new Promise((resolve) => setTimeout(resolve, 20_000))]);
    stop.abort();
    expect(seen.filter((e) => e.orderId === 'w1').map((e) => [e.from, e.to, e.cause])).toEqual([
      [null, 'unpaid', 'sql'],
      ['unpaid', 'cancelled', 'sql'],
    ]);
    expect(seen.filter((e) => e.orderId === 'w2').map((e) => e.to)).toEqual(['unpaid', 'paid', 'shipped', 'received']);
    expect(await appConserved(db.pool)).toEqual(before);
    // Purge: the app's cancelled order (-1) goes with its lines; the history stays.
    await updateSettings(db.pool, { purgeCancelledAfter: '0' });
    expect((await purgeCancelledOrders(db.pool)).purged).toBe(1);
    const left = await one<{ orders: string; lines: string }>(
      db.pool,
      `select (select count(*) from new_order where order_id = 'w1') as orders,
              (select count(*) from new_order_detail where order_id = 'w1') as lines`,
    );
    expect(left).toEqual({ orders: '0', lines: '0' });
    expect((await readOrderEvents(db.pool, { orderId: 'w1' })).at(-1)).toMatchObject({ to: null });
  });

  test('the CLI shows the status and the settings, and runs the jobs', async () => {
    const { db, shop, app } = await adopted(bookkeeping);
    await app.place('k1', shop.buyers[0]!, 'store1', [{ book: 'book1', count: 1 }]);
    const out: string[] = [];
    const io = { stdout: { write: (t: string) => out.push(t) }, stderr: { write: () => true } };
    expect(await main(['status', '--database-url', db.url], io)).toBe(0);
    expect(out.join('')).toMatch(/^bookkeeping\s+/m);
    expect(out.join('')).toMatch(new RegExp(`^bookkeeping\\s+${bookkeeping}$`, 'm'));
    expect(out.join('')).toMatch(/^state_cancelled\s+-1$/m);
    out.length = 0;
    const at = later(11 * minute).toISOString();
    expect(await main(['run', 'cancel', '--as-of', at, '--database-url', db.url], io)).toBe(0);
    expect(out.join('')).toBe('cancelled 1 order\n');
    expect(await stateOf(db, 'k1')).toBe(appStates.cancelled);
  });

  test('a store with two owners in the app user_store: its orders are not confirmed (OA009, recorded) until it has one', async () => {
    const { db, shop, app } = await adopted(bookkeeping);
    await db.pool.query(`insert into user_store (user_id, store_id) values ('seller2', 'store1')`);
    await app.place('t1', shop.buyers[0]!, 'store1', [{ book: 'book1', count: 1 }]);
    await app.pay('t1');
    await app.ship('t1');
    const before = await appConserved(db.pool);
    expect((await confirmShippedOrders(db.pool, { asOf: later(2 * minute) })).confirmed).toBe(0);
    const failure = await one<{ sqlstate: string; message: string }>(
      db.pool,
      `select sqlstate, message from order_automation.order_failure where order_id = 't1'`,
    );
    expect(failure).toEqual({
      sqlstate: 'OA009',
      message: 'order t1: store store1 has 2 owners in user_store, and its seller must be exactly one',
    });
    expect(await appConserved(db.pool)).toEqual(before);
    await db.pool.query(`delete from user_store where user_id = 'seller2' and store_id = 'store1'`);
    expect((await confirmShippedOrders(db.pool, { asOf: later(2 * minute) })).confirmed).toBe(1);
    expect(
      (await one<{ balance: number }>(db.pool, `select balance from "user" where user_id = 'seller1'`)).balance,
    ).toBe(101);
    expect(await appConserved(db.pool)).toEqual(before);
  });
});

describe('state codes changed after an install', () => {
  test('rebuild the indexes the automation probes, and the automation, status and history follow them', async () => {
    const db = await createTestDatabase();
    created.push(db);
    await seedBookstore(db.pool);
    await placeOrder(db.pool, {
      orderId: 'x1',
      userId: 'buyer1',
      storeId: 'store1',
      items: [{ bookId: 'book1', count: 1, price: 5 }],
    });
    await updateSettings(db.pool, { stateCancelled: -1, stateReceived: 9 });
    const { rows } = await db.pool.query<{ indexname: string; indexdef: string }>(
      `select indexname, indexdef from pg_indexes where tablename = 'new_order' and indexdef like '%WHERE%' order by 1`,
    );
    expect(rows.map((r) => r.indexdef.replace(/^.* WHERE /, `${r.indexname}: `))).toEqual([
      `new_order_cancelled_at: (state = '-1'::integer)`,
      'new_order_pay_deadline_due: ((state = 0) AND (held_at IS NULL) AND ((failed_state IS NULL) OR (failed_state <> 0)))',
      'new_order_receipt_deadline_due: ((state = 2) AND (held_at IS NULL) AND ((failed_state IS NULL) OR (failed_state <> 2)))',
    ]);
    // The run finds its due orders through the rebuilt index: with sequential scans off, only a predicate
    // it can prove (the code planned as a constant) lets it use the partial index.
    const scans = async () =>
      Number(
        (
          await one<{ n: string }>(
            db.pool,
            `select idx_scan as n from pg_stat_user_indexes where indexrelname = 'new_order_cancelled_at'`,
          )
        ).n,
      );
    const probesBefore = await scans();
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await client.query('set enable_seqscan = off');
      const cancelled = await client.query<{ cancelled: string }>(
        'call order_automation.cancel_expired_orders(as_of => $1)',
        [later(11 * minute)],
      );
      expect(cancelled.rows[0]!.cancelled).toBe('1');
      await updateSettings(db.pool, { purgeCancelledAfter: '1 hour' });
      await client.query('call order_automation.purge_cancelled_orders()');
      await client.query('select pg_stat_force_next_flush()');
      await client.query('select 1');
    } finally {
      await client.end();
    }
    expect((await one<{ state: number }>(db.pool, `select state from new_order where order_id = 'x1'`)).state).toBe(-1);
    expect(await scans()).toBeGreaterThan(probesBefore);
    expect((await readOrderEvents(db.pool, { orderId: 'x1' })).at(-1)).toMatchObject({
      from: 'unpaid',
      to: 'cancelled',
      toState: -1,
    });
    // The API, the refusals and doctor name the states by the codes now set.
    expect((await getOrder(db.pool, 'x1')).state).toBe('cancelled');
    await expect(payOrder(db.pool, 'x1')).rejects.toThrow('order x1 cannot change from cancelled (-1) to paid (1)');
    const settingsCheck = (await doctor(db.url, { schedule: false })).checks.find((c) => c.id === 'settings');
    expect(settingsCheck?.summary).toMatch(
      /, bookkeeping full, state codes unpaid 0, paid 1, shipped 2, received 9, cancelled -1$/,
    );
    // Five different codes, or nothing changes.
    await expect(updateSettings(db.pool, { stateShipped: 9 })).rejects.toBeInstanceOf(InvalidSettingError);
    await expect(updateSettings(db.pool, { stateShipped: 40_000 })).rejects.toBeInstanceOf(InvalidSettingError);
    expect(
      await one(
        db.pool,
        'select state_unpaid, state_paid, state_shipped, state_received, state_cancelled from order_automation.settings',
      ),
    ).toEqual({ state_unpaid: 0, state_paid: 1, state_shipped: 2, state_received: 9, state_cancelled: -1 });
  });
});
