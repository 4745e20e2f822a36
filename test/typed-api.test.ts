// The typed module as an app meets it: every mistake a caller can make in a lifecycle call comes
// back as an OrderAutomationError naming the order and the argument (never a raw pg error), one
// order reads back whole with getOrder, and the state names and the error mapper are exported.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  cancelOrder,
  getOrder,
  getSettings,
  updateSettings,
  holdOrder,
  InvalidArgumentError,
  InvalidTransitionError,
  OrderAutomationError,
  OrderExistsError,
  OrderNotFoundError,
  orderStates,
  payOrder,
  paymentStarted,
  placeOrder,
  extendReceipt,
  shipOrder,
  stateName,
  toOrderAutomationError,
  type PlaceOrder,
} from '../src/index.js';
import { conserved, createTestDatabase, one, seedBookstore, type TestDatabase } from './helpers.js';
import { newClient } from './setup/connections.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
  await seedBookstore(db.pool);
});
afterAll(async () => db?.drop());

const order = (orderId: string, change: Partial<PlaceOrder> = {}): PlaceOrder => ({
  orderId,
  userId: 'buyer1',
  storeId: 'store1',
  items: [
    { bookId: 'book1', count: 2, price: 100 },
    { bookId: 'book2', count: 1, price: 250 },
  ],
  ...change,
});

describe('mistakes in a lifecycle call are typed errors naming the order and the argument', () => {
  test.each([
    [
      'an unknown buyer',
      order('e1', { userId: 'nobody' }),
      InvalidArgumentError,
      'order e1: no such user "nobody" (user_id)',
      '23503',
    ],
    [
      'an unknown store',
      order('e2', { storeId: 'nowhere' }),
      InvalidArgumentError,
      'order e2: no such store "nowhere" (store_id)',
      '23503',
    ],
    [
      'a count of -1',
      order('e3', {
        items: [
          { bookId: 'book1', count: 1, price: 1 },
          { bookId: 'book2', count: -1, price: 1 },
        ],
      }),
      InvalidArgumentError,
      'order e3: the count of book "book2" must be a whole number of books, at least 1, not -1',
      '23514',
    ],
    [
      'a count of 1.5',
      order('e4', { items: [{ bookId: 'book3', count: 1.5, price: 1 }] }),
      InvalidArgumentError,
      'order e4: the count of book "book3" must be a whole number of books, at least 1, not 1.5',
      '22P02',
    ],
    [
      'a price of 1.5',
      order('e5', { items: [{ bookId: 'book1', count: 1, price: 1.5 }] }),
      InvalidArgumentError,
      'order e5: the price of book "book1" must be a whole number of the smallest currency unit (cents), 0 or more, not 1.5',
      '22P02',
    ],
    [
      'a negative price',
      order('e6', { items: [{ bookId: 'book2', count: 1, price: -3 }] }),
      InvalidArgumentError,
      'order e6: the price of book "book2" must be a whole number of the smallest currency unit (cents), 0 or more, not -3',
      '23514',
    ],
    [
      'a count out of range',
      order('e7', { items: [{ bookId: 'book1', count: 3_000_000_000, price: 1 }] }),
      InvalidArgumentError,
      'order e7: the count of book "book1" must be a whole number of books, at least 1, not 3000000000',
      '22003',
    ],
    [
      'a book listed twice',
      order('e8', {
        items: [
          { bookId: 'book1', count: 1, price: 1 },
          { bookId: 'book1', count: 2, price: 1 },
        ],
      }),
      InvalidArgumentError,
      'order e8: book "book1" is listed twice; give each book once, with its count',
      '23505',
    ],
  ])('%s', async (_what, placed, Class, message, sqlstate) => {
    const before = await conserved(db.pool);
    const error = await placeOrder(db.pool, placed).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Class);
    expect(error).toBeInstanceOf(OrderAutomationError);
    expect(error).toMatchObject({ message, sqlstate });
    // The raw error stays reachable for whoever needs PostgreSQL's own words.
    expect((error as Error).cause).toMatchObject({ code: sqlstate });
    expect(await conserved(db.pool)).toEqual(before);
    expect((await db.pool.query('select from new_order where order_id = $1', [placed.orderId])).rowCount).toBe(0);
  });

  test('placing an order under a taken id is OrderExistsError (an InvalidArgumentError), and the first order stays', async () => {
    await placeOrder(db.pool, order('taken'));
    const before = await conserved(db.pool);
    const error = await placeOrder(db.pool, order('taken', { userId: 'buyer2' })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrderExistsError);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error).toMatchObject({ message: 'order taken already exists', sqlstate: '23505' });
    expect(await conserved(db.pool)).toEqual(before);
    expect(await one(db.pool, `select user_id from new_order where order_id = 'taken'`)).toEqual({ user_id: 'buyer1' });
  });

  test('an interval argument that is no interval names the argument', async () => {
    await placeOrder(db.pool, order('grace'));
    const grace = await paymentStarted(db.pool, 'grace', 'soon').catch((e: unknown) => e);
    expect(grace).toBeInstanceOf(InvalidArgumentError);
    expect(grace).toMatchObject({ message: `order grace: grace must be an interval such as '10 minutes', not "soon"` });
    await payOrder(db.pool, 'grace');
    await shipOrder(db.pool, 'grace');
    const error = await extendReceipt(db.pool, 'grace', 'a while').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error).toMatchObject({ message: `order grace: by must be an interval such as '10 minutes', not "a while"` });
  });

  test('refusals of the lifecycle name the states as the API does, with the code SQL writes', async () => {
    await placeOrder(db.pool, order('named'));
    const error = await shipOrder(db.pool, 'named').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidTransitionError);
    expect((error as Error).message).toBe('order named cannot change from unpaid (0) to shipped (2)');
    await payOrder(db.pool, 'named');
    await expect(payOrder(db.pool, 'named')).rejects.toThrow('order named is already paid (1)');
    await expect(paymentStarted(db.pool, 'named')).rejects.toThrow(
      'order named is paid (1): a payment can start only while it is unpaid (0)',
    );
    // An order without lines (the package's functions never make one) can reach the delete guard.
    await db.pool.query(`insert into new_order (order_id, user_id, store_id) values ('bare', 'buyer1', 'store1')`);
    await db.pool.query(`update new_order set state = 1 where order_id = 'bare'`);
    await expect(db.pool.query(`delete from new_order where order_id = 'bare'`)).rejects.toThrow(
      'order bare cannot be deleted while paid (1)',
    );
  });
});

describe("an app's own state codes (settings state_unpaid ... state_cancelled)", () => {
  test('refusals and getOrder name the states by the codes in settings', async () => {
    const client = newClient({ connectionString: db.url });
    await client.connect();
    try {
      // In a transaction rolled back: the other tests of this file keep the default codes.
      await client.query('begin');
      await updateSettings(client, { stateCancelled: -1, stateReceived: 9 });
      await placeOrder(client, order('coded'));
      await cancelOrder(client, 'coded');
      expect(await getOrder(client, 'coded')).toMatchObject({ state: 'cancelled', total: 450 });
      expect((await client.query(`select state from new_order where order_id = 'coded'`)).rows).toEqual([
        { state: -1 },
      ]);
      // Each refusal behind a savepoint: an error aborts the transaction up to it.
      const refused = async (call: () => Promise<unknown>): Promise<unknown> => {
        await client.query('savepoint refused');
        const error = await call().catch((e: unknown) => e);
        await client.query('rollback to savepoint refused');
        return error;
      };
      expect(await refused(() => payOrder(client, 'coded'))).toMatchObject({
        message: 'order coded cannot change from cancelled (-1) to paid (1)',
      });
      expect(await refused(() => holdOrder(client, 'coded', 'why'))).toMatchObject({
        message: 'order coded is cancelled (-1), a final state: it cannot be held',
      });
      expect(
        await refused(() => client.query(`update new_order set state = 4 where order_id = 'coded'`)),
      ).toMatchObject({
        code: 'OA001',
        message: 'order coded cannot change from cancelled (-1) to an unknown state (4)',
      });
    } finally {
      await client.query('rollback');
      await client.end();
    }
  });
});

describe('getOrder', () => {
  test('reads an order whole: state by name, lines, total, deadlines and hold', async () => {
    const placed = await placeOrder(db.pool, order('whole'));
    await holdOrder(db.pool, 'whole', 'buyer asks');
    const read = await getOrder(db.pool, 'whole');
    expect(read).toMatchObject({
      orderId: 'whole',
      userId: 'buyer1',
      storeId: 'store1',
      state: 'unpaid',
      createdAt: placed.createdAt,
      payDeadline: placed.payDeadline,
      receiptDeadline: null,
      holdReason: 'buyer asks',
      lines: [
        { bookId: 'book1', count: 2, price: 100 },
        { bookId: 'book2', count: 1, price: 250 },
      ],
      total: 450,
    });
    expect(read.heldAt).toBeInstanceOf(Date);
    const sql = await one<{ total: string }>(
      db.pool,
      `select sum(count * price)::text as total from new_order_detail where order_id = 'whole'`,
    );
    expect(read.total).toBe(Number(sql.total));
  });

  test('an order that does not exist is OrderNotFoundError (OA005)', async () => {
    const error = await getOrder(db.pool, 'no-such-order').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrderNotFoundError);
    expect(error).toMatchObject({ message: 'order no-such-order does not exist', sqlstate: 'OA005' });
  });

  test('joins the transaction of the client it is given', async () => {
    const client = newClient({ connectionString: db.url });
    await client.connect();
    try {
      await client.query('begin');
      await placeOrder(client, order('in-tx'));
      expect((await getOrder(client, 'in-tx')).state).toBe('unpaid');
      await client.query('rollback');
      await expect(getOrder(db.pool, 'in-tx')).rejects.toBeInstanceOf(OrderNotFoundError);
    } finally {
      await client.end();
    }
  });
});

describe('exports', () => {
  test('stateName names every state code, and nothing else, by the default codes or by those given', async () => {
    expect([0, 1, 2, 3, 4].map((code) => stateName(code))).toEqual([...orderStates]);
    expect(stateName(5)).toBeNull();
    expect(stateName(null)).toBeNull();
    const codes = { ...(await getSettings(db.pool)), stateCancelled: -1, stateReceived: 9 };
    expect([0, 1, 2, 9, -1].map((code) => stateName(code, codes))).toEqual([...orderStates]);
    expect(stateName(4, codes)).toBeNull();
  });

  test("the error mapper turns a pg error into the package's class, and leaves anything else as it is", async () => {
    const raw = await db.pool.query(`select order_automation.pay_order('no-such-order')`).catch((e: unknown) => e);
    expect(raw).not.toBeInstanceOf(OrderAutomationError);
    expect(toOrderAutomationError(raw)).toBeInstanceOf(OrderNotFoundError);
    const other = new TypeError('not from the database');
    expect(toOrderAutomationError(other)).toBe(other);
  });
});
