// The seed's loop (reference/000_a35c7be692d25a13.txt) in TypeScript over pg, its stock bug fixed:
// load every order, then for each due one read its lines, write each stock row (or the seller's
// balance) back, and update the order. It runs on copies of the tables, without the package's
// triggers, holding a subset of the orders: it is too slow for all of them.
import type pg from 'pg';
import { asLoader } from './connections.js';
import { measureMemory, type MemoryUse } from './memory.js';

export interface SeedLoop extends MemoryUse {
  /** Orders it loaded (every order of the copy), and those it cancelled and confirmed. */
  loaded: number;
  cancelled: number;
  confirmed: number;
  ms: number;
  /** Due orders processed per second, the load of every order included (the seed did it each tick). */
  ordersPerSecond: number;
}

/** One order in twenty: i % 200 < 10 takes each of the ten categories of data.ts once per 200. */
const SUBSET = `(substr(order_id, 2)::integer % 200) < 10`;
const TABLES = ['"user"', 'user_store', 'store', 'new_order', 'new_order_detail'];

/**
 * Copies the bookstore into schema seed, indexes and checks kept, triggers and foreign keys not;
 * before the drains, which would leave the copy nothing due.
 */
export async function copySeedTables(pool: pg.Pool): Promise<void> {
  await asLoader(pool, async (client) => {
    await client.query('drop schema if exists seed cascade; create schema seed');
    for (const table of TABLES) {
      const where = table.startsWith('new_order') ? `where ${SUBSET}` : '';
      await client.query(`create table seed.${table} (like public.${table} including all)`);
      await client.query(`insert into seed.${table} select * from public.${table} ${where}`);
    }
    await client.query(`vacuum analyze ${TABLES.map((t) => `seed.${t}`).join(', ')}`);
  });
}

interface OrderRow {
  order_id: string;
  store_id: string;
  state: number;
  pay_deadline: Date | null;
  receipt_deadline: Date | null;
}

async function cancel(client: pg.ClientBase, order: OrderRow): Promise<void> {
  const lines = await client.query<{ book_id: string; count: number }>(
    'select book_id, count from seed.new_order_detail where order_id = $1',
    [order.order_id],
  );
  for (const line of lines.rows) {
    const stock = await client.query<{ stock_level: number }>(
      'select stock_level from seed.store where store_id = $1 and book_id = $2',
      [order.store_id, line.book_id],
    );
    // The seed added the count to a local variable and dropped it; here it is written back.
    await client.query('update seed.store set stock_level = $3 where store_id = $1 and book_id = $2', [
      order.store_id,
      line.book_id,
      stock.rows[0]!.stock_level + line.count,
    ]);
  }
  await client.query('update seed.new_order set state = 4, cancelled_at = now() where order_id = $1', [order.order_id]);
}

async function confirm(client: pg.ClientBase, order: OrderRow): Promise<void> {
  await client.query('update seed.new_order set state = 3, received_at = now() where order_id = $1', [order.order_id]);
  const lines = await client.query<{ count: number; price: string }>(
    'select count, price from seed.new_order_detail where order_id = $1',
    [order.order_id],
  );
  const total = lines.rows.reduce((sum, line) => sum + line.count * Number(line.price), 0);
  const store = await client.query<{ user_id: string }>('select user_id from seed.user_store where store_id = $1', [
    order.store_id,
  ]);
  const seller = store.rows[0]!.user_id;
  const user = await client.query<{ balance: string }>('select balance from seed."user" where user_id = $1', [seller]);
  await client.query('update seed."user" set balance = $2 where user_id = $1', [
    seller,
    Number(user.rows[0]!.balance) + total,
  ]);
}

/**
 * Runs the seed's loop once over the copy made by copySeedTables, processing what is due at `asOf`,
 * in one transaction as the seed did; then drops the copy.
 */
export async function seedLoop(pool: pg.Pool, asOf: Date): Promise<SeedLoop> {
  const client = await pool.connect();
  try {
    return await measureMemory(pool, client, async () => {
      const started = performance.now();
      const orders = (await client.query<OrderRow>('select * from seed.new_order')).rows;
      let cancelled = 0;
      let confirmed = 0;
      await client.query('begin');
      for (const order of orders) {
        if (order.state === 0 && order.pay_deadline! <= asOf) {
          await cancel(client, order);
          cancelled++;
        } else if (order.state === 2 && order.receipt_deadline! <= asOf) {
          await confirm(client, order);
          confirmed++;
        }
      }
      await client.query('commit');
      const ms = performance.now() - started;
      return {
        loaded: orders.length,
        cancelled,
        confirmed,
        ms,
        ordersPerSecond: ((cancelled + confirmed) / ms) * 1000,
      };
    });
  } finally {
    client.release();
    await pool.query('drop schema seed cascade');
  }
}
