// every allowed change does its bookkeeping in the database, whoever makes it; every other
// change is refused with its documented SQLSTATE and a message naming the order.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  cancelOrder,
  confirmReceipt,
  InsufficientBalanceError,
  InsufficientStockError,
  InvalidTransitionError,
  OrderNotFoundError,
  payOrder,
  placeOrder,
  readOrderEvents,
  shipOrder,
  orderStates,
} from '../src/index.js';
import { balanceOf, conserved, createTestDatabase, one, seedBookstore, stockOf, type TestDatabase } from './helpers.js';

let db: TestDatabase;
let n = 0;
const nextId = () => `order${++n}`;

beforeAll(async () => {
  db = await createTestDatabase();
  await seedBookstore(db.pool, { buyers: 3, stores: 2, books: 3, balance: 10_000, stock: 50 });
});
afterAll(async () => db?.drop());

async function place(
  items: [string, number, number][] = [
    ['book1', 2, 300],
    ['book2', 1, 400],
  ],
  buyer = 'buyer1',
  store = 'store1',
) {
  return placeOrder(db.pool, {
    orderId: nextId(),
    userId: buyer,
    storeId: store,
    items: items.map(([bookId, count, price]) => ({ bookId, count, price })),
  });
}

async function sqlError(promise: Promise<unknown>): Promise<{ code: string; message: string }> {
  const error = await promise.then(
    () => undefined,
    (e: { code: string; message: string }) => e,
  );
  expect(error, 'expected the database to refuse').toBeDefined();
  return error!;
}

describe('placing an order', () => {
  test('a placed order is unpaid, its pay deadline is created_at + payment_timeout, and its books leave the shelf', async () => {
    const before = await stockOf(db.pool, 'store1', 'book1');
    const order = await place([['book1', 3, 100]]);
    expect(order.state).toBe('unpaid');
    expect(order.payDeadline!.getTime() - order.createdAt.getTime()).toBe(10 * 60 * 1000);
    expect(await stockOf(db.pool, 'store1', 'book1')).toBe(before - 3);
  });

  test('a pay deadline given by the app is kept', async () => {
    const id = nextId();
    const row = await one<{ pay_deadline: Date }>(
      db.pool,
      `insert into new_order (order_id, user_id, store_id, pay_deadline) values ($1, 'buyer1', 'store1', '2030-01-01T00:00:00Z') returning pay_deadline`,
      [id],
    );
    expect(row.pay_deadline.toISOString()).toBe('2030-01-01T00:00:00.000Z');
  });

  test('an order cannot be inserted in any state but unpaid (OA001)', async () => {
    const error = await sqlError(
      db.pool.query(`insert into new_order (order_id, user_id, store_id, state) values ('x1', 'buyer1', 'store1', 1)`),
    );
    expect(error.code).toBe('OA001');
    expect(error.message).toContain('x1');
  });

  test('ordering more books than the store has is refused and nothing changes (OA002)', async () => {
    const before = await stockOf(db.pool, 'store1', 'book3');
    const error = await place([
      ['book3', 1, 10],
      ['book2', 1000, 10],
    ]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InsufficientStockError);
    expect((error as Error).message).toMatch(/order order\d+: store store1 has \d+ of book book2, 1000 wanted/);
    expect(await stockOf(db.pool, 'store1', 'book3')).toBe(before);
  });

  test('ordering a book the store does not stock is refused (OA002)', async () => {
    const error = await place([['nosuchbook', 1, 10]]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InsufficientStockError);
    expect((error as Error).message).toContain('does not stock book nosuchbook');
  });

  test('changing and removing the lines of an unpaid order moves its books back', async () => {
    const order = await place([['book1', 5, 10]]);
    const before = await stockOf(db.pool, 'store1', 'book1');
    await db.pool.query('update new_order_detail set count = 2 where order_id = $1', [order.orderId]);
    expect(await stockOf(db.pool, 'store1', 'book1')).toBe(before + 3);
    await db.pool.query('delete from new_order_detail where order_id = $1', [order.orderId]);
    expect(await stockOf(db.pool, 'store1', 'book1')).toBe(before + 5);
  });
});

describe('paying, shipping, receiving', () => {
  test('paying takes the total from the buyer and stamps paid_at', async () => {
    const order = await place(
      [
        ['book1', 2, 300],
        ['book2', 1, 400],
      ],
      'buyer2',
    );
    const before = await balanceOf(db.pool, 'buyer2');
    const paid = await payOrder(db.pool, order.orderId);
    expect(paid.state).toBe('paid');
    expect(paid.paidAt).toBeInstanceOf(Date);
    expect(await balanceOf(db.pool, 'buyer2')).toBe(before - 1000);
  });

  test('paying more than the balance is refused and nothing changes (OA003)', async () => {
    const order = await place([['book1', 1, 1_000_000]], 'buyer3');
    const before = await balanceOf(db.pool, 'buyer3');
    const error = await payOrder(db.pool, order.orderId).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InsufficientBalanceError);
    expect((error as Error).message).toBe(`order ${order.orderId}: buyer buyer3 has not enough balance to pay for it`);
    expect(await balanceOf(db.pool, 'buyer3')).toBe(before);
    expect(
      (await one<{ state: number }>(db.pool, 'select state from new_order where order_id = $1', [order.orderId])).state,
    ).toBe(0);
  });

  test('shipping stamps shipped_at and sets receipt_deadline = shipped_at + receipt_timeout', async () => {
    const order = await place();
    await payOrder(db.pool, order.orderId);
    const shipped = await shipOrder(db.pool, order.orderId);
    expect(shipped.state).toBe('shipped');
    expect(shipped.receiptDeadline!.getTime() - shipped.shippedAt!.getTime()).toBe(60_000);
  });

  test('receiving pays the total to the seller who owns the store', async () => {
    const order = await place([['book3', 4, 250]], 'buyer1', 'store2');
    await payOrder(db.pool, order.orderId);
    await shipOrder(db.pool, order.orderId);
    const before = await balanceOf(db.pool, 'seller2');
    const received = await confirmReceipt(db.pool, order.orderId);
    expect(received.state).toBe('received');
    expect(received.receivedAt).toBeInstanceOf(Date);
    expect(await balanceOf(db.pool, 'seller2')).toBe(before + 1000);
  });

  test('a plain UPDATE by an app does the same bookkeeping as the package functions', async () => {
    const order = await place([['book2', 2, 50]], 'buyer1', 'store2');
    const buyer = await balanceOf(db.pool, 'buyer1');
    const seller = await balanceOf(db.pool, 'seller2');
    await db.pool.query('update new_order set state = 1 where order_id = $1', [order.orderId]);
    await db.pool.query('update new_order set state = 2 where order_id = $1', [order.orderId]);
    const row = await one<{ shipped_at: Date; receipt_deadline: Date }>(
      db.pool,
      'select shipped_at, receipt_deadline from new_order where order_id = $1',
      [order.orderId],
    );
    expect(row.receipt_deadline.getTime() - row.shipped_at.getTime()).toBe(60_000);
    await db.pool.query('update new_order set state = 3 where order_id = $1', [order.orderId]);
    expect(await balanceOf(db.pool, 'buyer1')).toBe(buyer - 100);
    expect(await balanceOf(db.pool, 'seller2')).toBe(seller + 100);
    const events = await readOrderEvents(db.pool, { orderId: order.orderId });
    expect(events.map((e) => [e.from, e.to, e.cause])).toEqual([
      [null, 'unpaid', 'place_order'],
      ['unpaid', 'paid', 'sql'],
      ['paid', 'shipped', 'sql'],
      ['shipped', 'received', 'sql'],
    ]);
  });

  test('one UPDATE that pays several orders of several buyers debits each buyer once, in one pass', async () => {
    const a = await place([['book1', 1, 10]], 'buyer1');
    const b = await place([['book1', 1, 20]], 'buyer1');
    const c = await place([['book1', 1, 40]], 'buyer2');
    const [b1, b2] = [await balanceOf(db.pool, 'buyer1'), await balanceOf(db.pool, 'buyer2')];
    await db.pool.query('update new_order set state = 1 where order_id = any($1)', [[a.orderId, b.orderId, c.orderId]]);
    expect(await balanceOf(db.pool, 'buyer1')).toBe(b1 - 30);
    expect(await balanceOf(db.pool, 'buyer2')).toBe(b2 - 40);
  });
});

describe('cancelling', () => {
  test('cancelling an unpaid order puts its books back', async () => {
    const before = await stockOf(db.pool, 'store1', 'book2');
    const order = await place([['book2', 4, 10]]);
    const cancelled = await cancelOrder(db.pool, order.orderId);
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.cancelledAt).toBeInstanceOf(Date);
    expect(await stockOf(db.pool, 'store1', 'book2')).toBe(before);
  });

  test('cancelling a paid order puts its books back and refunds the buyer', async () => {
    const stock = await stockOf(db.pool, 'store1', 'book2');
    const balance = await balanceOf(db.pool, 'buyer2');
    const order = await place([['book2', 3, 70]], 'buyer2');
    await payOrder(db.pool, order.orderId);
    expect(await balanceOf(db.pool, 'buyer2')).toBe(balance - 210);
    await cancelOrder(db.pool, order.orderId);
    expect(await balanceOf(db.pool, 'buyer2')).toBe(balance);
    expect(await stockOf(db.pool, 'store1', 'book2')).toBe(stock);
  });
});

describe('refused changes', () => {
  // [from state, to state]: every pair the lifecycle does not allow.
  const allowed = new Set(['0-1', '1-2', '2-3', '0-4', '1-4']);
  const refused: [number, number][] = [];
  for (let from = 0; from <= 4; from++)
    for (let to = 0; to <= 4; to++) if (from !== to && !allowed.has(`${from}-${to}`)) refused.push([from, to]);
  const path = [[], [1], [1, 2], [1, 2, 3], [4]];

  test.each(refused)(
    'from state %i to state %i is refused with OA001 naming the order, and nothing changes',
    async (from, to) => {
      const order = await place([['book1', 1, 10]], 'buyer3', 'store2');
      for (const state of path[from]!)
        await db.pool.query('update new_order set state = $2 where order_id = $1', [order.orderId, state]);
      const snapshot = await conserved(db.pool);
      const error = await sqlError(
        db.pool.query('update new_order set state = $2 where order_id = $1', [order.orderId, to]),
      );
      expect(error.code).toBe('OA001');
      // Named as the TypeScript API names them, with the code a plain UPDATE writes.
      expect(error.message).toBe(
        `order ${order.orderId} cannot change from ${orderStates[from]} (${from}) to ${orderStates[to]} (${to})`,
      );
      expect(await conserved(db.pool)).toEqual(snapshot);
      expect(
        (await one<{ state: number }>(db.pool, 'select state from new_order where order_id = $1', [order.orderId]))
          .state,
      ).toBe(from);
    },
  );

  test('the typed helpers raise InvalidTransitionError for a refused change', async () => {
    const order = await place([['book1', 1, 10]]);
    await expect(shipOrder(db.pool, order.orderId)).rejects.toBeInstanceOf(InvalidTransitionError);
    await expect(confirmReceipt(db.pool, order.orderId)).rejects.toThrow(
      `order ${order.orderId} cannot change from unpaid (0) to received (3)`,
    );
  });

  test('a helper naming an order that does not exist raises OrderNotFoundError (OA005)', async () => {
    await expect(payOrder(db.pool, 'no-such-order')).rejects.toBeInstanceOf(OrderNotFoundError);
  });

  test('the lines of a paid order cannot change (OA004)', async () => {
    const order = await place([['book1', 1, 10]]);
    await payOrder(db.pool, order.orderId);
    for (const statement of [
      `insert into new_order_detail values ($1, 'book3', 1, 1)`,
      'update new_order_detail set count = 9 where order_id = $1',
      'delete from new_order_detail where order_id = $1',
    ]) {
      const error = await sqlError(db.pool.query(statement, [order.orderId]));
      expect(error.code).toBe('OA004');
      expect(error.message).toContain(order.orderId);
    }
  });

  test('the lines of a cancelled order may be deleted (purge) but not changed', async () => {
    const order = await place([['book1', 1, 10]]);
    await cancelOrder(db.pool, order.orderId);
    const stock = await stockOf(db.pool, 'store1', 'book1');
    expect(
      (await sqlError(db.pool.query('update new_order_detail set count = 9 where order_id = $1', [order.orderId])))
        .code,
    ).toBe('OA004');
    await db.pool.query('delete from new_order_detail where order_id = $1', [order.orderId]);
    await db.pool.query('delete from new_order where order_id = $1', [order.orderId]);
    expect(await stockOf(db.pool, 'store1', 'book1')).toBe(stock);
  });

  test('an order holding money cannot be deleted, and its store or buyer cannot change (OA001)', async () => {
    const order = await placeOrder(db.pool, {
      orderId: nextId(),
      userId: 'buyer1',
      storeId: 'store1',
      items: [{ bookId: 'book1', count: 1, price: 1 }],
    });
    await payOrder(db.pool, order.orderId);
    const empty = nextId();
    await db.pool.query(`insert into new_order (order_id, user_id, store_id) values ($1, 'buyer1', 'store1')`, [empty]);
    await db.pool.query('update new_order set state = 1 where order_id = $1', [empty]);
    expect((await sqlError(db.pool.query('delete from new_order where order_id = $1', [empty]))).code).toBe('OA001');
    expect(
      (await sqlError(db.pool.query(`update new_order set store_id = 'store2' where order_id = $1`, [order.orderId])))
        .code,
    ).toBe('OA001');
  });
});

describe('conservation', () => {
  // A bookstore of its own, so that a model started from the seed predicts every step of the mix.
  let shop: TestDatabase;
  const buyers = 3;
  const stores = 2;
  const balance = 1_000_000;
  const stock = 50;
  beforeAll(async () => {
    shop = await createTestDatabase();
    await seedBookstore(shop.pool, { buyers, stores, books: 3, balance, stock });
  });
  afterAll(async () => shop?.drop());

  test('over a random mix of orders and changes, each step succeeds or is refused with the SQLSTATE the lifecycle predicts, and money and stock are conserved', async () => {
    const start = await conserved(shop.pool);
    // mulberry32, seeded: every bit of it varies. (An LCG modulo 2^31 taken modulo 4 or 6 repeats its
    // low bits within a few steps: a mix made with one only ever asked to pay.)
    let seed = 42;
    const random = (k: number) => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) % k;
    };
    // The model: what is on each shelf, each buyer's balance, and each order's lines and state.
    const shelf = new Map<string, number>();
    for (let s = 1; s <= stores; s++) for (const book of ['book1', 'book2']) shelf.set(`store${s}/${book}`, stock);
    const wallet = new Map(Array.from({ length: buyers }, (_, b) => [`buyer${b + 1}`, balance]));
    interface Modelled {
      buyer: string;
      store: string;
      lines: [string, number, number][];
      state: number;
    }
    const orders = new Map<string, Modelled>();
    const allowedChange = new Set(['0-1', '1-2', '2-3', '0-4', '1-4']);
    const total = (o: Modelled) => o.lines.reduce((sum, [, count, price]) => sum + count * price, 0);
    const restock = (o: Modelled, sign: 1 | -1) => {
      for (const [book, count] of o.lines)
        shelf.set(`${o.store}/${book}`, shelf.get(`${o.store}/${book}`)! + sign * count);
    };
    /** The refusal the lifecycle gives for this step (undefined: it succeeds), applied to the model when it succeeds. */
    const predictPlace = (o: Modelled): string | undefined => {
      if (o.lines.some(([book, count]) => count > shelf.get(`${o.store}/${book}`)!)) return 'OA002';
      restock(o, -1);
      return undefined;
    };
    const predictChange = (o: Modelled, to: number): string | undefined => {
      if (to === o.state) return undefined; // no change, no bookkeeping
      if (!allowedChange.has(`${o.state}-${to}`)) return 'OA001';
      if (o.state === 0 && to === 1) {
        if (wallet.get(o.buyer)! < total(o)) return 'OA003';
        wallet.set(o.buyer, wallet.get(o.buyer)! - total(o));
      }
      if (to === 4) restock(o, 1);
      if (o.state === 1 && to === 4) wallet.set(o.buyer, wallet.get(o.buyer)! + total(o));
      o.state = to;
      return undefined;
    };
    const outcome = (step: Promise<unknown>) =>
      step.then(
        () => undefined,
        (e: { sqlstate?: string; code?: string }) => e.sqlstate ?? e.code ?? String(e),
      );

    const surprises: string[] = [];
    const seen = new Set<string>();
    const changed = new Set<string>();
    for (let i = 0; i < 150; i++) {
      let step: string;
      let expected: string | undefined;
      let actual: string | undefined;
      if (random(6) <= 1 || orders.size === 0) {
        const lines = (
          [
            ['book1', 1 + random(3), 1 + random(500)],
            ['book2', 1 + random(2), random(300)],
          ] as [string, number, number][]
        ).slice(0, 1 + random(2));
        const order: Modelled = {
          buyer: `buyer${1 + random(buyers)}`,
          store: `store${1 + random(stores)}`,
          lines,
          state: 0,
        };
        const orderId = `mix${i}`;
        step = `place ${orderId} ${JSON.stringify(order)}`;
        expected = predictPlace(order);
        actual = await outcome(
          placeOrder(shop.pool, {
            orderId,
            userId: order.buyer,
            storeId: order.store,
            items: lines.map(([bookId, count, price]) => ({ bookId, count, price })),
          }),
        );
        if (expected === undefined) orders.set(orderId, order);
      } else {
        const ids = [...orders.keys()];
        const id = ids[random(ids.length)]!;
        const to = [1, 2, 3, 4][random(4)]!;
        const from = orders.get(id)!.state;
        step = `${id} from state ${from} to ${to}`;
        expected = predictChange(orders.get(id)!, to);
        actual = await outcome(shop.pool.query('update new_order set state = $2 where order_id = $1', [id, to]));
        if (actual === undefined && from !== to) changed.add(`${from}-${to}`);
      }
      if (actual !== expected) surprises.push(`${step}: expected ${expected ?? 'success'}, got ${actual ?? 'success'}`);
      seen.add(actual ?? 'success');
    }
    expect(surprises).toEqual([]);
    // The mix made every allowed change and met both refusals it can meet (balances never run out).
    expect([...changed].sort()).toEqual([...allowedChange].sort());
    expect([...seen].sort()).toEqual(['OA001', 'OA002', 'success']);

    const { rows } = await shop.pool.query<{ order_id: string; state: number }>(
      'select order_id, state from new_order',
    );
    expect(Object.fromEntries(rows.map((r) => [r.order_id, r.state]))).toEqual(
      Object.fromEntries([...orders].map(([id, o]) => [id, o.state])),
    );
    for (const [key, level] of shelf) {
      const [store, book] = key.split('/') as [string, string];
      expect(await stockOf(shop.pool, store, book), key).toBe(level);
    }
    for (const [buyer, money] of wallet) expect(await balanceOf(shop.pool, buyer), buyer).toBe(money);
    expect(await conserved(shop.pool)).toEqual(start);
  });
});
