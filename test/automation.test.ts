// the two procedures, driven through CALL ... (as_of => ...): what they process, in batches,
// what they skip, what they record, and that each order is processed at most once under races.
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import {
  cancelExpiredOrders,
  confirmReceipt,
  confirmShippedOrders,
  getStatus,
  InvalidArgumentError,
  OrderAutomationError,
  payOrder,
  placeOrder,
  readOrderEvents,
  shipOrder,
} from '../src/index.js';
import { balanceOf, conserved, createTestDatabase, one, seedBookstore, stockOf, type TestDatabase } from './helpers.js';
import { newClient } from './setup/connections.js';

let db: TestDatabase;
let n = 0;
const hour = 3600_000;
const later = (ms: number) => new Date(Date.now() + ms);

// Each test counts what the procedures processed: a bookstore of its own, with nothing else due.
beforeEach(async () => {
  db = await createTestDatabase();
  await seedBookstore(db.pool, { buyers: 8, stores: 4, books: 5, balance: 100_000_000, stock: 1_000_000 });
});
afterEach(async () => db?.drop());

/** Places `count` orders of one book each (set-based), optionally paid and shipped; returns their ids. */
async function bulkOrders(
  count: number,
  state: 'unpaid' | 'paid' | 'shipped' = 'unpaid',
  prefix = `bulk${++n}_`,
): Promise<string[]> {
  const { rows } = await db.pool.query<{ order_id: string }>(
    `
    insert into new_order (order_id, user_id, store_id)
    select $1 || i, 'buyer' || (1 + i % 8), 'store' || (1 + i % 4) from generate_series(1, $2::integer) i
    returning order_id`,
    [prefix, count],
  );
  const ids = rows.map((r) => r.order_id);
  await db.pool.query(
    `insert into new_order_detail (order_id, book_id, count, price)
    select id, 'book' || (1 + length(id) % 5), 2, 150 from unnest($1::text[]) id`,
    [ids],
  );
  if (state !== 'unpaid') await db.pool.query('update new_order set state = 1 where order_id = any($1)', [ids]);
  if (state === 'shipped') await db.pool.query('update new_order set state = 2 where order_id = any($1)', [ids]);
  return ids;
}

async function statesOf(ids: string[]): Promise<Record<number, number>> {
  const { rows } = await db.pool.query<{ state: number; n: string }>(
    'select state, count(*) n from new_order where order_id = any($1) group by state',
    [ids],
  );
  return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
}

describe('auto-cancel of unpaid orders', () => {
  test('an unpaid order past its deadline is cancelled and its books return', async () => {
    const stock = await stockOf(db.pool, 'store3', 'book4');
    const order = await placeOrder(db.pool, {
      orderId: `due${++n}`,
      userId: 'buyer1',
      storeId: 'store3',
      items: [{ bookId: 'book4', count: 7, price: 5 }],
    });
    expect(await stockOf(db.pool, 'store3', 'book4')).toBe(stock - 7);
    const { cancelled } = await cancelExpiredOrders(db.pool, { asOf: later(hour) });
    expect(cancelled).toBe(1);
    const row = await one<{ state: number; cancelled_at: Date }>(
      db.pool,
      'select state, cancelled_at from new_order where order_id = $1',
      [order.orderId],
    );
    expect(row.state).toBe(4);
    expect(await stockOf(db.pool, 'store3', 'book4')).toBe(stock);
    const events = await readOrderEvents(db.pool, { orderId: order.orderId });
    expect(events.at(-1)).toMatchObject({ from: 'unpaid', to: 'cancelled', cause: 'payment_timeout' });
  });

  test('an order before its deadline, and a paid order, are left alone', async () => {
    const fresh = await bulkOrders(3);
    const paid = await bulkOrders(3, 'paid');
    const { cancelled } = await cancelExpiredOrders(db.pool); // as_of = now: nothing placed just now is due
    expect(cancelled).toBe(0);
    expect(await statesOf(fresh)).toEqual({ 0: 3 });
    await cancelExpiredOrders(db.pool, { asOf: later(hour) });
    expect(await statesOf(fresh)).toEqual({ 4: 3 });
    expect(await statesOf(paid)).toEqual({ 1: 3 });
  });

  test('as_of decides what is due: an order is due exactly when pay_deadline <= as_of', async () => {
    const [id] = await bulkOrders(1);
    // A deadline JavaScript can represent exactly (whole milliseconds).
    const { pay_deadline } = await one<{ pay_deadline: Date }>(
      db.pool,
      `update new_order set pay_deadline = date_trunc('second', now()) + interval '5 minutes' where order_id = $1 returning pay_deadline`,
      [id],
    );
    await cancelExpiredOrders(db.pool, { asOf: new Date(pay_deadline.getTime() - 1) });
    expect(await statesOf([id!])).toEqual({ 0: 1 });
    await cancelExpiredOrders(db.pool, { asOf: pay_deadline });
    expect(await statesOf([id!])).toEqual({ 4: 1 });
  });
});

describe('auto-confirm of shipped orders', () => {
  test('a shipped order past its receipt deadline is marked received and the seller is paid', async () => {
    const order = await placeOrder(db.pool, {
      orderId: `ship${++n}`,
      userId: 'buyer2',
      storeId: 'store4',
      items: [{ bookId: 'book1', count: 3, price: 700 }],
    });
    await payOrder(db.pool, order.orderId);
    await shipOrder(db.pool, order.orderId);
    const seller = await balanceOf(db.pool, 'seller4');
    expect((await confirmShippedOrders(db.pool)).confirmed).toBe(0);
    const { confirmed } = await confirmShippedOrders(db.pool, { asOf: later(hour) });
    expect(confirmed).toBe(1);
    expect(await balanceOf(db.pool, 'seller4')).toBe(seller + 2100);
    const events = await readOrderEvents(db.pool, { orderId: order.orderId });
    expect(events.at(-1)).toMatchObject({ from: 'shipped', to: 'received', cause: 'receipt_timeout' });
  });

  test('only shipped orders are confirmed: paid and unpaid ones are not', async () => {
    const paid = await bulkOrders(2, 'paid');
    const unpaid = await bulkOrders(2);
    await confirmShippedOrders(db.pool, { asOf: later(hour) });
    expect(await statesOf(paid)).toEqual({ 1: 2 });
    expect(await statesOf(unpaid)).toEqual({ 0: 2 });
  });
});

describe('batches and runs', () => {
  test('batch_size splits a backlog into batches, each committed on its own, until nothing is due', async () => {
    const ids = await bulkOrders(25);
    const { cancelled } = await cancelExpiredOrders(db.pool, { asOf: later(hour), batchSize: 10 });
    expect(cancelled).toBe(25);
    expect(await statesOf(ids)).toEqual({ 4: 25 });
    // now() is the transaction's start: three batches are three transactions.
    const tx = await one<{ n: string }>(
      db.pool,
      `select count(distinct at) n from order_automation.order_event where order_id = any($1) and cause = 'payment_timeout'`,
      [ids],
    );
    expect(Number(tx.n)).toBe(3);
    const run = await one<{ processed: string; batch_size: number; finished_at: Date | null; error: string | null }>(
      db.pool,
      `select processed, batch_size, finished_at, error from order_automation.run where job = 'cancel_expired_orders' order by id desc limit 1`,
    );
    expect(run).toMatchObject({ processed: '25', batch_size: 10, error: null });
    expect(run.finished_at).toBeInstanceOf(Date);
  });

  test('a batch_size of 1 and of 1,000,000 both drain everything', async () => {
    const a = await bulkOrders(5);
    expect((await cancelExpiredOrders(db.pool, { asOf: later(hour), batchSize: 1 })).cancelled).toBe(5);
    const b = await bulkOrders(5);
    expect((await cancelExpiredOrders(db.pool, { asOf: later(hour), batchSize: 1_000_000 })).cancelled).toBe(5);
    expect(await statesOf([...a, ...b])).toEqual({ 4: 10 });
  });

  test('a batch_size out of range is refused with OA006', async () => {
    for (const batchSize of [0, -5, 1_000_001]) {
      const error = await cancelExpiredOrders(db.pool, { batchSize }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as Error).message).toContain('batch_size must be between 1 and 1000000');
    }
  });

  test('calling a procedure inside a transaction block explains that it cannot', async () => {
    const client = await db.pool.connect();
    try {
      await client.query('begin');
      const error = await cancelExpiredOrders(client).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OrderAutomationError);
      expect((error as Error).message).toContain('cannot run inside a transaction block');
      await client.query('rollback');
    } finally {
      client.release();
    }
  });

  test('one bad order is skipped and recorded with its error, every other one is processed, and it is retried next run', async () => {
    const ids = await bulkOrders(30, 'unpaid', `faulty${++n}_`);
    const bad = ids[7]!;
    // An app's own trigger that refuses to let this one order change.
    await db.pool.query(`
      create function public.refuse_one() returns trigger language plpgsql as $$
      begin
        if new.order_id = '${bad}' then raise exception 'the warehouse is counting order %', new.order_id using errcode = 'P0001'; end if;
        return new;
      end $$;
      create trigger refuse_one before update on public.new_order for each row execute function public.refuse_one();`);
    try {
      const { cancelled } = await cancelExpiredOrders(db.pool, { asOf: later(hour), batchSize: 10 });
      expect(cancelled).toBe(29);
      expect(await statesOf(ids)).toEqual({ 0: 1, 4: 29 });
      const failure = await one<{ order_id: string; sqlstate: string; message: string; failed: string }>(
        db.pool,
        `
        select f.order_id, f.sqlstate, f.message, r.failed from order_automation.order_failure f
          join order_automation.run r on r.id = f.run_id order by f.id desc limit 1`,
      );
      expect(failure).toEqual({
        order_id: bad,
        sqlstate: 'P0001',
        message: `the warehouse is counting order ${bad}`,
        failed: '1',
      });
      const status = await getStatus(db.pool);
      expect(status.jobs.find((j) => j.job === 'cancel_expired_orders')!.lastRun).toMatchObject({
        processed: 29,
        failed: 1,
      });
    } finally {
      await db.pool.query('drop trigger refuse_one on public.new_order; drop function public.refuse_one()');
    }
    expect((await cancelExpiredOrders(db.pool, { asOf: later(hour) })).cancelled).toBe(1);
    expect(await statesOf(ids)).toEqual({ 4: 30 });
  });

  test('status tells the orders due now and the next deadline', async () => {
    await db.pool.query(`insert into new_order (order_id, user_id, store_id, pay_deadline) values
      ('st${++n}a', 'buyer1', 'store1', now() - interval '1 minute'),
      ('st${n}b', 'buyer1', 'store1', now() - interval '2 minute'),
      ('st${n}c', 'buyer1', 'store1', '2099-01-01T00:00:00Z')`);
    const status = await getStatus(db.pool);
    const cancel = status.jobs.find((j) => j.job === 'cancel_expired_orders')!;
    expect(cancel.dueNow).toBe(2);
    expect(cancel.nextDeadline).toEqual(new Date('2099-01-01T00:00:00Z'));
    expect(cancel.schedule).toBe('* * * * *');
    expect(status.settings.batchSize).toBe(500);
    await cancelExpiredOrders(db.pool);
    expect((await getStatus(db.pool)).jobs.find((j) => j.job === 'cancel_expired_orders')!.dueNow).toBe(0);
  });
});

describe('at most once, with real parallel connections', () => {
  async function parallel<T>(count: number, work: (client: pg.Client, i: number) => Promise<T>): Promise<T[]> {
    const clients = await Promise.all(
      Array.from({ length: count }, async () => {
        const c = newClient({ connectionString: db.url });
        await c.connect();
        return c;
      }),
    );
    try {
      return await Promise.all(clients.map((c, i) => work(c, i)));
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  }

  test('four runners of the same procedure at once cancel each order exactly once', async () => {
    const start = await conserved(db.pool);
    const ids = await bulkOrders(2000, 'unpaid', `race${++n}_`);
    const counts = await parallel(4, (c) =>
      cancelExpiredOrders(c, { asOf: later(hour), batchSize: 50 }).then((r) => r.cancelled),
    );
    expect(counts.reduce((a, b) => a + b, 0)).toBe(2000);
    expect(await statesOf(ids)).toEqual({ 4: 2000 });
    const twice = await one<{ n: string }>(
      db.pool,
      `select count(*) n from (select order_id from order_automation.order_event
      where order_id = any($1) and to_state = 4 group by order_id having count(*) <> 1) x`,
      [ids],
    );
    expect(twice.n).toBe('0');
    expect(await conserved(db.pool)).toEqual(start);
  });

  test('buyers paying due orders while two cancellers run: every order ends paid or cancelled, never both', async () => {
    const start = await conserved(db.pool);
    const ids = await bulkOrders(2000, 'unpaid', `pay${++n}_`);
    const shuffled = [...ids].sort(() => Math.random() - 0.5);
    const results = await parallel(10, async (c, i) => {
      if (i < 2) {
        let total = 0;
        for (let k = 0; k < 5; k++)
          total += (await cancelExpiredOrders(c, { asOf: later(hour), batchSize: 100 })).cancelled;
        return { cancelled: total, paid: 0 };
      }
      let paid = 0;
      for (let k = i - 2; k < shuffled.length; k += 8) {
        await payOrder(c, shuffled[k]!).then(
          () => paid++,
          (e: unknown) => {
            // The only acceptable refusal: the canceller got there first.
            if ((e as OrderAutomationError).sqlstate !== 'OA001') throw e;
          },
        );
      }
      return { cancelled: 0, paid };
    });
    const cancelled = results.reduce((a, r) => a + r.cancelled, 0);
    const paid = results.reduce((a, r) => a + r.paid, 0);
    const states = await statesOf(ids);
    expect(cancelled + paid).toBe(2000);
    expect(states).toEqual(Object.fromEntries(Object.entries({ 1: paid, 4: cancelled }).filter(([, v]) => v > 0)));
    const both = await one<{ n: string }>(
      db.pool,
      `select count(*) n from (select order_id from order_automation.order_event
      where order_id = any($1) and to_state in (1, 4) group by order_id having count(*) <> 1) x`,
      [ids],
    );
    expect(both.n).toBe('0');
    expect(await conserved(db.pool)).toEqual(start);
  });

  test('a manual confirm racing the auto-confirm credits the seller exactly once', async () => {
    const ids = await bulkOrders(800, 'shipped', `recv${++n}_`);
    const sellers = async () =>
      Number((await one<{ s: string }>(db.pool, `select sum(balance) s from "user" where user_id like 'seller%'`)).s);
    const before = await sellers();
    const results = await parallel(6, async (c, i) => {
      if (i < 2) return (await confirmShippedOrders(c, { asOf: later(hour), batchSize: 40 })).confirmed;
      let confirmed = 0;
      for (let k = i - 2; k < ids.length; k += 4) {
        await confirmReceipt(c, ids[k]!).then(
          () => confirmed++,
          (e: unknown) => {
            if ((e as OrderAutomationError).sqlstate !== 'OA001') throw e;
          },
        );
      }
      return confirmed;
    });
    expect(results.reduce((a, b) => a + b, 0)).toBe(800);
    expect(await statesOf(ids)).toEqual({ 3: 800 });
    expect(await sellers()).toBe(before + 800 * 300);
  });
});
