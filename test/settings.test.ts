// one row, read and changed through the module; bad values are refused by the
// table's constraints with a message naming the setting, and a refused change changes nothing.
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { getSettings, InvalidSettingError, payOrder, placeOrder, shipOrder, updateSettings } from '../src/index.js';
import { createTestDatabase, seedBookstore, type TestDatabase } from './helpers.js';
import { newClient } from './setup/connections.js';

// Each test starts from a fresh install's settings, whatever the one before it changed.
let db: TestDatabase;
beforeEach(async () => {
  db = await createTestDatabase();
});
afterEach(async () => db?.drop());

// Intervals come back in words, as they are set; 60 seconds is kept (and read) as 1 minute.
const defaults = {
  paymentTimeout: '10 minutes',
  receiptTimeout: '1 minute',
  batchSize: 500,
  maxRunTime: '50 seconds',
  paymentGrace: '5 minutes',
  receiptExtension: '3 days',
  remindBefore: null,
  purgeCancelledAfter: null,
  historyRetention: '30 days',
  // Added by the adopt change: who books, and the state codes.
  bookkeeping: 'full',
  stateUnpaid: 0,
  statePaid: 1,
  stateShipped: 2,
  stateReceived: 3,
  stateCancelled: 4,
  precision: '1 second',
};

describe('settings', () => {
  test('a fresh install has the reference defaults', async () => {
    expect(await getSettings(db.pool)).toEqual(defaults);
  });

  test('changed settings are read back, and untouched ones stay', async () => {
    expect(await updateSettings(db.pool, { paymentTimeout: '15 minutes', batchSize: 250 })).toEqual({
      ...defaults,
      paymentTimeout: '15 minutes',
      batchSize: 250,
    });
    expect(await updateSettings(db.pool, { paymentTimeout: '10 minutes', batchSize: 500 })).toEqual(defaults);
  });

  test.each([
    [{ paymentTimeout: '0 seconds' }, 'payment_timeout must be a positive interval'],
    [{ paymentTimeout: '-5 minutes' }, 'payment_timeout must be a positive interval'],
    [{ receiptTimeout: '0' }, 'receipt_timeout must be a positive interval'],
    [{ batchSize: 0 }, 'batch_size must be between 1 and 1000000'],
    [{ batchSize: 1_000_001 }, 'batch_size must be between 1 and 1000000'],
    [{ maxRunTime: '2 days' }, 'max_run_time must be between 1 second and 1 day'],
    [{ paymentTimeout: 'banana' }, 'invalid input syntax for type interval: "banana"'],
    [{ batchSize: 1.5 }, 'batch_size must be a whole number'],
    [{ paymentGrace: '0' }, 'payment_grace must be a positive interval'],
    [{ receiptExtension: '-1 day' }, 'receipt_extension must be a positive interval'],
    [{ remindBefore: '0' }, 'remind_before must be a positive interval or NULL (off)'],
    [{ purgeCancelledAfter: '-1 second' }, 'purge_cancelled_after must be zero or more, or NULL (keep)'],
    [{ historyRetention: '5 minutes' }, 'history_retention must be at least 1 hour'],
  ])('%o is refused with a message naming the setting, and nothing changes', async (change, message) => {
    const error = await updateSettings(db.pool, { receiptTimeout: '2 minutes', ...change }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidSettingError);
    expect((error as Error).message).toContain(message);
    expect(await getSettings(db.pool)).toEqual(defaults);
  });

  test('nullable settings are switched on with a value and off with null', async () => {
    expect(await updateSettings(db.pool, { remindBefore: '2 minutes', purgeCancelledAfter: '0' })).toMatchObject({
      remindBefore: '2 minutes',
      purgeCancelledAfter: '0',
    });
    expect(await updateSettings(db.pool, { remindBefore: null, purgeCancelledAfter: null })).toEqual(defaults);
  });

  test.each([
    ['10 minutes', '10 minutes'],
    ['1 day 2 hours', '1 day 2 hours'],
    ['36 hours', '36 hours'],
    ['90 seconds', '1 minute 30 seconds'],
    ['1.5 hours', '1 hour 30 minutes'],
    ['2 weeks', '14 days'],
    ['1 mon', '1 month'],
    ['00:00:00.25', '0.25 seconds'],
    ['PT45M', '45 minutes'],
  ])('an interval set as %j is read back as %j, whatever the session IntervalStyle', async (set, read) => {
    const styles = ['postgres', 'iso_8601', 'sql_standard', 'postgres_verbose'];
    for (const style of styles) {
      const client = newClient({ connectionString: db.url, options: `-c IntervalStyle=${style}` });
      await client.connect();
      try {
        expect((await updateSettings(client, { paymentTimeout: set })).paymentTimeout, style).toBe(read);
        expect((await getSettings(client)).paymentTimeout, style).toBe(read);
        // The words read back are the same interval again.
        expect((await updateSettings(client, { paymentTimeout: read })).paymentTimeout, style).toBe(read);
      } finally {
        await client.end();
      }
    }
    await updateSettings(db.pool, { paymentTimeout: defaults.paymentTimeout });
    const { rows } = await db.pool.query<{ same: boolean }>(`select $1::interval = $2::interval as same`, [set, read]);
    expect(rows[0]!.same).toBe(true);
  });

  test('the settings table keeps exactly one row', async () => {
    await expect(db.pool.query('insert into order_automation.settings (singleton) values (false)')).rejects.toThrow(
      'settings has exactly one row',
    );
    await expect(db.pool.query('insert into order_automation.settings default values')).rejects.toThrow(
      'duplicate key',
    );
  });

  test('deadlines of new orders and new shipments follow the current timeouts', async () => {
    await seedBookstore(db.pool);
    await updateSettings(db.pool, { paymentTimeout: '2 hours', receiptTimeout: '3 days' });
    const order = await placeOrder(db.pool, {
      orderId: 'follows',
      userId: 'buyer1',
      storeId: 'store1',
      items: [{ bookId: 'book1', count: 1, price: 5 }],
    });
    expect(order.payDeadline!.getTime() - order.createdAt.getTime()).toBe(2 * 3600_000);
    await payOrder(db.pool, order.orderId);
    const shipped = await shipOrder(db.pool, order.orderId);
    expect(shipped.receiptDeadline!.getTime() - shipped.shippedAt!.getTime()).toBe(3 * 86400_000);
  });
});
