// what shops ask for beyond the two rules — per-store timeouts, payment grace, one receipt
// extension, holds, due-soon reminders, purging cancelled orders — each with its races.
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import {
  cancelExpiredOrders,
  confirmShippedOrders,
  extendReceipt,
  getStatus,
  holdOrder,
  HoldConflictError,
  InvalidArgumentError,
  InvalidTransitionError,
  OrderNotFoundError,
  payOrder,
  paymentStarted,
  placeOrder,
  purgeCancelledOrders,
  readOrderEvents,
  ReceiptAlreadyExtendedError,
  releaseOrder,
  setStoreSettings,
  clearStoreSettings,
  getStoreSettings,
  shipOrder,
  updateSettings,
  InvalidSettingError,
  cancelOrder,
} from '../src/index.js';
import { conserved, createTestDatabase, one, seedBookstore, stockOf, type TestDatabase } from './helpers.js';
import { newClient } from './setup/connections.js';

let db: TestDatabase;
let n = 0;
const minute = 60_000;
const later = (ms: number) => new Date(Date.now() + ms);

// A bookstore of its own for each test: the settings it changes and the orders it leaves held, due
// or cancelled never reach the next one.
beforeEach(async () => {
  db = await createTestDatabase();
  await seedBookstore(db.pool, { buyers: 4, stores: 3, books: 3, balance: 10_000_000, stock: 100_000 });
});
afterEach(async () => db?.drop());

async function order(store = 'store1', state: 'unpaid' | 'paid' | 'shipped' = 'unpaid') {
  const placed = await placeOrder(db.pool, {
    orderId: `f${++n}`,
    userId: 'buyer1',
    storeId: store,
    items: [{ bookId: 'book1', count: 2, price: 100 }],
  });
  if (state !== 'unpaid') await payOrder(db.pool, placed.orderId);
  if (state === 'shipped') return shipOrder(db.pool, placed.orderId);
  return placed;
}

async function stateOf(orderId: string): Promise<number> {
  return (await one<{ state: number }>(db.pool, 'select state from new_order where order_id = $1', [orderId])).state;
}

describe('per-store timeouts', () => {
  test('new orders and new shipments of a store with overrides follow them; other stores follow the global settings', async () => {
    await setStoreSettings(db.pool, 'store2', { paymentTimeout: '30 minutes', receiptTimeout: '2 days' });
    expect(await getStoreSettings(db.pool)).toEqual([
      { storeId: 'store2', paymentTimeout: '30 minutes', receiptTimeout: '2 days' },
    ]);
    const own = await order('store2', 'shipped');
    expect(own.payDeadline!.getTime() - own.createdAt.getTime()).toBe(30 * minute);
    expect(own.receiptDeadline!.getTime() - own.shippedAt!.getTime()).toBe(2 * 86400_000);
    const global = await order('store1', 'shipped');
    expect(global.payDeadline!.getTime() - global.createdAt.getTime()).toBe(10 * minute);
    expect(global.receiptDeadline!.getTime() - global.shippedAt!.getTime()).toBe(minute);

    // NULL: back to the global setting, for that timeout only.
    await setStoreSettings(db.pool, 'store2', { paymentTimeout: null });
    const half = await order('store2', 'shipped');
    expect(half.payDeadline!.getTime() - half.createdAt.getTime()).toBe(10 * minute);
    expect(half.receiptDeadline!.getTime() - half.shippedAt!.getTime()).toBe(2 * 86400_000);
    expect((await getStatus(db.pool)).storeSettings).toEqual([
      { storeId: 'store2', paymentTimeout: null, receiptTimeout: '2 days' },
    ]);
    await clearStoreSettings(db.pool, 'store2');
    expect(await getStoreSettings(db.pool)).toEqual([]);
  });

  test('a bad override, or one for a store that does not exist, is refused', async () => {
    await expect(setStoreSettings(db.pool, 'store1', { paymentTimeout: '-1 minute' })).rejects.toThrow(
      InvalidSettingError,
    );
    await expect(setStoreSettings(db.pool, 'store1', { receiptTimeout: 'soon' })).rejects.toThrow(InvalidSettingError);
    await expect(setStoreSettings(db.pool, 'no-such-store', { paymentTimeout: '1 hour' })).rejects.toThrow(
      InvalidArgumentError,
    );
    expect(await getStoreSettings(db.pool)).toEqual([]);
  });
});

describe('payment grace', () => {
  test('an order whose payment started is not auto-cancelled before now + grace, and is afterwards', async () => {
    const placed = await order();
    await db.pool.query(`update new_order set pay_deadline = now() - interval '1 minute' where order_id = $1`, [
      placed.orderId,
    ]);
    const started = await paymentStarted(db.pool, placed.orderId, '10 minutes');
    expect(started.payDeadline!.getTime()).toBeGreaterThan(Date.now() + 9 * minute);
    await cancelExpiredOrders(db.pool, { asOf: later(5 * minute) });
    expect(await stateOf(placed.orderId)).toBe(0);
    await cancelExpiredOrders(db.pool, { asOf: later(11 * minute) });
    expect(await stateOf(placed.orderId)).toBe(4);
    const causes = (await readOrderEvents(db.pool, { orderId: placed.orderId })).map((e) => e.cause);
    expect(causes).toEqual(['place_order', 'payment_started', 'payment_timeout']);
  });

  test('the default grace is the payment_grace setting, and a grace never shortens the deadline', async () => {
    const placed = await order();
    const started = await paymentStarted(db.pool, placed.orderId);
    expect(started.payDeadline!.getTime()).toBe(placed.payDeadline!.getTime()); // 10 min deadline > 5 min grace
    await updateSettings(db.pool, { paymentGrace: '1 hour' });
    const longer = await paymentStarted(db.pool, placed.orderId);
    expect(longer.payDeadline!.getTime()).toBeGreaterThan(Date.now() + 59 * minute);
  });

  test('a payment cannot start on an order that is not unpaid, nor with a grace that is not positive', async () => {
    const paid = await order('store1', 'paid');
    await expect(paymentStarted(db.pool, paid.orderId)).rejects.toBeInstanceOf(InvalidTransitionError);
    await expect(paymentStarted(db.pool, (await order()).orderId, '0 seconds')).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    await expect(paymentStarted(db.pool, 'nope')).rejects.toBeInstanceOf(OrderNotFoundError);
  });

  test('payment_started racing the canceller: every order is either safe and unpaid, or cancelled and refused to the payer', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 200; i++) ids.push((await order('store3')).orderId);
    await db.pool.query(`update new_order set pay_deadline = now() - interval '1 minute' where order_id = any($1)`, [
      ids,
    ]);
    const payers = Array.from({ length: 4 }, () => newClient({ connectionString: db.url }));
    await Promise.all(payers.map((c) => c.connect()));
    try {
      const [outcomes] = await Promise.all([
        Promise.all(
          payers.map(async (c, k) => {
            const result: Record<string, 'safe' | 'too late'> = {};
            for (let i = k; i < ids.length; i += payers.length) {
              result[ids[i]!] = await paymentStarted(c, ids[i]!, '1 hour').then(
                () => 'safe' as const,
                (e: unknown) => {
                  if (!(e instanceof InvalidTransitionError)) throw e;
                  return 'too late' as const;
                },
              );
            }
            return result;
          }),
        ).then((parts) => Object.assign({}, ...parts) as Record<string, 'safe' | 'too late'>),
        cancelExpiredOrders(db.pool, { batchSize: 10 }),
      ]);
      const { rows } = await db.pool.query<{ order_id: string; state: number }>(
        'select order_id, state from new_order where order_id = any($1)',
        [ids],
      );
      for (const row of rows)
        expect([row.order_id, row.state]).toEqual([row.order_id, outcomes[row.order_id] === 'safe' ? 0 : 4]);
    } finally {
      await Promise.all(payers.map((c) => c.end()));
    }
  });
});

describe('receipt extension', () => {
  test('the buyer pushes the receipt deadline once; the second time is refused (OA007)', async () => {
    const shipped = await order('store1', 'shipped');
    const extended = await extendReceipt(db.pool, shipped.orderId, '2 days');
    expect(extended.receiptDeadline!.getTime() - shipped.receiptDeadline!.getTime()).toBe(2 * 86400_000);
    expect(extended.receiptExtendedAt).toBeInstanceOf(Date);
    const again = await extendReceipt(db.pool, shipped.orderId).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(ReceiptAlreadyExtendedError);
    expect((again as Error).message).toContain(shipped.orderId);
    await confirmShippedOrders(db.pool, { asOf: later(86400_000) });
    expect(await stateOf(shipped.orderId)).toBe(2);
    await confirmShippedOrders(db.pool, { asOf: later(3 * 86400_000) });
    expect(await stateOf(shipped.orderId)).toBe(3);
  });

  test('only a shipped order can be extended (OA001), by default by the receipt_extension setting', async () => {
    await expect(extendReceipt(db.pool, (await order('store1', 'paid')).orderId)).rejects.toBeInstanceOf(
      InvalidTransitionError,
    );
    const shipped = await order('store1', 'shipped');
    const extended = await extendReceipt(db.pool, shipped.orderId);
    expect(extended.receiptDeadline!.getTime() - shipped.receiptDeadline!.getTime()).toBe(3 * 86400_000);
    await expect(extendReceipt(db.pool, (await order('store1', 'shipped')).orderId, '-1 day')).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
  });
});

describe('holds', () => {
  test('a held order is neither auto-cancelled nor auto-confirmed, and shows in the status and the history', async () => {
    const unpaid = await order();
    const shipped = await order('store1', 'shipped');
    await holdOrder(db.pool, unpaid.orderId, 'fraud review');
    const held = await holdOrder(db.pool, shipped.orderId, 'buyer reports damage');
    expect(held).toMatchObject({ holdReason: 'buyer reports damage' });
    await cancelExpiredOrders(db.pool, { asOf: later(86400_000) });
    await confirmShippedOrders(db.pool, { asOf: later(86400_000) });
    expect([await stateOf(unpaid.orderId), await stateOf(shipped.orderId)]).toEqual([0, 2]);
    const status = await getStatus(db.pool);
    expect(status.jobs.find((j) => j.job === 'cancel_expired_orders')!.held).toBe(1);
    expect(status.jobs.find((j) => j.job === 'confirm_shipped_orders')!.held).toBe(1);
    const events = await readOrderEvents(db.pool, { orderId: shipped.orderId });
    expect(events.at(-1)).toMatchObject({
      from: 'shipped',
      to: 'shipped',
      cause: 'hold',
      note: 'buyer reports damage',
    });
  });

  test('the receipt countdown pauses during the hold and resumes with the time that was left', async () => {
    const shipped = await order('store1', 'shipped');
    await holdOrder(db.pool, shipped.orderId, 'dispute');
    // Pretend it all happened an hour ago: shipped, then held, and the hold lasted an hour.
    const { left } = await one<{ left: number }>(
      db.pool,
      `
      update new_order set shipped_at = shipped_at - interval '1 hour', held_at = held_at - interval '1 hour',
             receipt_deadline = receipt_deadline - interval '1 hour'
       where order_id = $1
      returning (extract(epoch from receipt_deadline - held_at) * 1000)::float8 as left`,
      [shipped.orderId],
    );
    expect(left).toBeGreaterThan(50_000);
    const released = await releaseOrder(db.pool, shipped.orderId);
    expect(released.heldAt).toBeNull();
    // The deadline passed during the hold, yet the order has the time that was left when it was held,
    // counted from the release.
    const { resumed } = await one<{ resumed: number }>(
      db.pool,
      `select (extract(epoch from o.receipt_deadline - e.at) * 1000)::float8 as resumed
         from new_order o join order_automation.order_event e using (order_id)
        where o.order_id = $1 and e.cause = 'release'`,
      [shipped.orderId],
    );
    expect(resumed).toBe(left);
    await confirmShippedOrders(db.pool);
    expect(await stateOf(shipped.orderId)).toBe(2);
    await confirmShippedOrders(db.pool, { asOf: later(left + 5000) });
    expect(await stateOf(shipped.orderId)).toBe(3);
  });

  test('holding twice, releasing what is not held, or holding a final order is refused', async () => {
    const placed = await order();
    await holdOrder(db.pool, placed.orderId, 'review');
    await expect(holdOrder(db.pool, placed.orderId, 'again')).rejects.toBeInstanceOf(HoldConflictError);
    await releaseOrder(db.pool, placed.orderId);
    await expect(releaseOrder(db.pool, placed.orderId)).rejects.toBeInstanceOf(HoldConflictError);
    await expect(holdOrder(db.pool, placed.orderId, '  ')).rejects.toBeInstanceOf(InvalidArgumentError);
    await cancelOrder(db.pool, placed.orderId);
    await expect(holdOrder(db.pool, placed.orderId, 'late')).rejects.toBeInstanceOf(InvalidTransitionError);
  });

  test('a hold racing the canceller: the order is either held (and stays unpaid) or cancelled, never both', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 150; i++) ids.push((await order('store3')).orderId);
    await db.pool.query(`update new_order set pay_deadline = now() - interval '1 minute' where order_id = any($1)`, [
      ids,
    ]);
    const holder = newClient({ connectionString: db.url });
    await holder.connect();
    try {
      const [held] = await Promise.all([
        (async () => {
          const ok = new Set<string>();
          for (const id of ids)
            await holdOrder(holder, id, 'race').then(
              () => ok.add(id),
              (e: unknown) => {
                if (!(e instanceof InvalidTransitionError)) throw e;
              },
            );
          return ok;
        })(),
        cancelExpiredOrders(db.pool, { batchSize: 5 }),
      ]);
      const { rows } = await db.pool.query<{ order_id: string; state: number; held: boolean }>(
        'select order_id, state, held_at is not null as held from new_order where order_id = any($1)',
        [ids],
      );
      for (const row of rows)
        expect([row.order_id, row.state, row.held]).toEqual([
          row.order_id,
          held.has(row.order_id) ? 0 : 4,
          held.has(row.order_id),
        ]);
      expect(held.size + rows.filter((r) => r.state === 4).length).toBe(ids.length);
    } finally {
      await holder.end();
    }
  });
});

describe('due-soon reminders', () => {
  test('once per order, a payment_due_soon / receipt_due_soon event when the deadline is remind_before away — never twice, never when past or held', async () => {
    await updateSettings(db.pool, { remindBefore: '5 minutes' });
    const soon = await order(); // pay deadline in 10 min: due soon from as_of = now + 6 min
    const held = await order();
    await holdOrder(db.pool, held.orderId, 'review');
    const shipped = await order('store1', 'shipped'); // receipt deadline in 1 min: due soon now
    const asOf = later(6 * minute);
    await cancelExpiredOrders(db.pool, { asOf });
    await cancelExpiredOrders(db.pool, { asOf }); // a second run writes no second reminder
    await confirmShippedOrders(db.pool, { asOf: later(30_000) });
    await confirmShippedOrders(db.pool, { asOf: later(30_000) });
    const reminders = async (id: string) =>
      (await readOrderEvents(db.pool, { orderId: id })).filter((e) => e.cause.endsWith('_due_soon'));
    expect((await reminders(soon.orderId)).map((e) => [e.cause, e.from, e.to])).toEqual([
      ['payment_due_soon', 'unpaid', 'unpaid'],
    ]);
    expect(await reminders(held.orderId)).toEqual([]);
    expect((await reminders(shipped.orderId)).map((e) => e.cause)).toEqual(['receipt_due_soon']);
    // Past its deadline: cancelled, not reminded.
    const late = await order();
    await cancelExpiredOrders(db.pool, { asOf: later(11 * minute) });
    expect(await reminders(late.orderId)).toEqual([]);
  });

  test('with remind_before off, no reminder is written', async () => {
    const soon = await order();
    await cancelExpiredOrders(db.pool, { asOf: later(9 * minute) });
    expect((await readOrderEvents(db.pool, { orderId: soon.orderId })).map((e) => e.cause)).toEqual(['place_order']);
  });
});

describe('purging cancelled orders', () => {
  test('with purge_cancelled_after unset, cancelled orders are kept', async () => {
    const placed = await order();
    await cancelOrder(db.pool, placed.orderId);
    expect(await purgeCancelledOrders(db.pool, { asOf: later(365 * 86400_000) })).toEqual({ purged: 0 });
    expect(await stateOf(placed.orderId)).toBe(4);
  });

  test('cancelled orders older than purge_cancelled_after are deleted with their lines, in batches; the history stays', async () => {
    await updateSettings(db.pool, { purgeCancelledAfter: '1 day' });
    const old: string[] = [];
    for (let i = 0; i < 7; i++) {
      const placed = await order();
      await cancelOrder(db.pool, placed.orderId);
      old.push(placed.orderId);
    }
    const fresh = await order();
    await cancelOrder(db.pool, fresh.orderId);
    await db.pool.query(`update new_order set cancelled_at = now() - interval '2 days' where order_id = any($1)`, [
      old,
    ]);
    const stock = await stockOf(db.pool, 'store1', 'book1');
    const money = (await conserved(db.pool)).money;
    expect((await purgeCancelledOrders(db.pool, { batchSize: 3 })).purged).toBe(7);
    const left = await db.pool.query('select order_id from new_order where order_id = any($1)', [
      [...old, fresh.orderId],
    ]);
    expect(left.rows).toEqual([{ order_id: fresh.orderId }]);
    expect(
      (await db.pool.query('select count(*)::int n from new_order_detail where order_id = any($1)', [old])).rows[0].n,
    ).toBe(0);
    const history = await readOrderEvents(db.pool, { orderId: old[0] });
    expect(history.map((e) => [e.from, e.to, e.cause])).toEqual([
      [null, 'unpaid', 'place_order'],
      ['unpaid', 'cancelled', 'cancel_order'],
      ['cancelled', null, 'purge_cancelled_orders'],
    ]);
    expect(await stockOf(db.pool, 'store1', 'book1')).toBe(stock);
    expect((await conserved(db.pool)).money).toBe(money);
  });

  test("'0' reproduces the reference: an order cancelled by the automation is deleted in the same run", async () => {
    await updateSettings(db.pool, { purgeCancelledAfter: '0' });
    const placed = await order();
    await cancelExpiredOrders(db.pool, { asOf: later(11 * minute) });
    expect((await db.pool.query('select 1 from new_order where order_id = $1', [placed.orderId])).rowCount).toBe(0);
    const causes = (await readOrderEvents(db.pool, { orderId: placed.orderId })).map((e) => e.cause);
    expect(causes).toEqual(['place_order', 'payment_timeout', 'purge_cancelled_orders']);
  });
});
