// "A backlog never becomes one giant transaction and never blocks a buyer for longer than
// one batch": 100,000 due orders drained by the canceller while buyers keep placing and paying
// orders on the same shelves, with real parallel connections; every wait measured.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { cancelExpiredOrders } from '../../src/index.js';
import { conserved, seedBookstore, type TestDatabase } from '../helpers.js';
import {
  expectConserved,
  expectInvariants,
  openFigures,
  parallel,
  reliabilityDatabase,
  type Shop,
  sqlstateOf,
  statesOf,
} from './support.js';

const tally = openFigures(import.meta.url);
const shop: Shop = { buyers: 40, stores: 8, books: 8 };
let db: TestDatabase;

beforeAll(async () => {
  db = await reliabilityDatabase();
  await seedBookstore(db.pool, { ...shop, balance: 1_000_000_000_000, stock: 1_000_000 });
});
afterAll(async () => db?.drop());

const ms = (n: number) => `${Math.round(n)} ms`;

/**
 * Places `count` due orders of one book each, as fast as PostgreSQL can write them: the lifecycle
 * triggers are switched off for the load (session_replication_role = replica), and what they would
 * have done is done set-based in the same transaction: the books reserved, the placed events written.
 */
async function insertBacklog(prefix: string, count: number): Promise<void> {
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    await client.query('set local session_replication_role = replica');
    await client.query(
      `
      insert into new_order (order_id, user_id, store_id, pay_deadline)
      select $1 || i, 'buyer' || (1 + i % $3), 'store' || (1 + i % $4), now() - interval '1 hour' + i * interval '1 millisecond'
        from generate_series(1, $2::integer) i`,
      [prefix, count, shop.buyers, shop.stores],
    );
    await client.query(
      `
      insert into new_order_detail (order_id, book_id, count, price)
      select $1 || i, 'book' || (1 + i % $3), 1 + i % 3, 250 from generate_series(1, $2::integer) i`,
      [prefix, count, shop.books],
    );
    await client.query(
      `
      insert into order_automation.order_event (order_id, from_state, to_state, cause)
      select $1 || i, null, 0, 'place_order' from generate_series(1, $2::integer) i`,
      [prefix, count],
    );
    await client.query(
      `
      update store s set stock_level = s.stock_level - r.n
        from (select o.store_id, d.book_id, sum(d.count) n from new_order o join new_order_detail d using (order_id)
               where starts_with(o.order_id, $1) group by 1, 2) r
       where s.store_id = r.store_id and s.book_id = r.book_id`,
      [prefix],
    );
    await client.query('commit');
  } catch (error) {
    await client.query('rollback');
    throw error;
  } finally {
    client.release();
  }
}

test('a backlog of 100,000 due orders drains while buyers keep placing and paying: no deadlock, no error, and no buyer waits much longer than one batch', async () => {
  const prefix = 'backlog_';
  const count = 100_000;
  const buyers = 6;
  const insertStarted = Date.now();
  await insertBacklog(prefix, count);
  const insertTime = Date.now() - insertStarted;
  const before = await conserved(db.pool);
  const deadlocks = async () =>
    Number(
      (
        await db.pool.query<{ n: string }>(
          'select deadlocks n from pg_stat_database where datname = current_database()',
        )
      ).rows[0]!.n,
    );
  const deadlocksBefore = await deadlocks();
  const since = (await db.pool.query<{ id: string }>('select coalesce(max(id), 0) id from order_automation.run'))
    .rows[0]!.id;

  let draining = true;
  let drainTime = 0;
  const waits: number[] = [];
  const errors: string[] = [];
  let placed = 0;
  await parallel(db.url, 1 + buyers, tally, async (client, i) => {
    if (i === 0) {
      const started = Date.now();
      try {
        // One run normally drains it all; max_run_time may end a run early, then the next goes on.
        for (let left = count; left > 0;) {
          await cancelExpiredOrders(client);
          left = (await statesOf(client, prefix))['0'] ?? 0;
        }
      } finally {
        drainTime = Date.now() - started;
        draining = false;
      }
      return;
    }
    // A buyer: two books from one store, in a random order (the stock rows the canceller restocks).
    for (let n = 0; draining; n++) {
      const id = `buyer${i}_${n}`;
      const store = `store${1 + Math.floor(Math.random() * shop.stores)}`;
      const [a, b] = [1 + Math.floor(Math.random() * shop.books), 1 + Math.floor(Math.random() * shop.books)];
      const items = [
        { book_id: `book${a}`, count: 1, price: 500 },
        ...(a === b ? [] : [{ book_id: `book${b}`, count: 2, price: 300 }]),
      ];
      try {
        let t = performance.now();
        await client.query(`select order_automation.place_order($1::text, $2::text, $3::text, $4::jsonb)`, [
          id,
          `buyer${1 + (n % shop.buyers)}`,
          store,
          JSON.stringify(items),
        ]);
        waits.push(performance.now() - t);
        t = performance.now();
        await client.query('select order_automation.pay_order($1::text)', [id]);
        waits.push(performance.now() - t);
        placed++;
      } catch (error) {
        errors.push(`${id}: ${sqlstateOf(error)} ${(error as Error).message}`);
      }
    }
  });
  tally.ordersRaced += count + placed;

  // The batches, as the database saw them: each commits its cancellations at its own now().
  const { rows: batches } = await db.pool.query<{ at: Date; n: string }>(
    `
    select at, count(*) n from order_automation.order_event
     where starts_with(order_id, $1) and cause = 'payment_timeout' group by at order by at`,
    [prefix],
  );
  const run = (
    await db.pool.query<{ finished: Date; runs: string; processed: string; errors: string; batch_size: number }>(
      `
    select max(finished_at) finished, count(*) runs, sum(processed) processed, count(error) errors, min(batch_size) batch_size
      from order_automation.run where job = 'cancel_expired_orders' and id > $1`,
      [since],
    )
  ).rows[0]!;
  const starts = batches.map((b) => b.at.getTime());
  const durations = starts.map((t, k) => (starts[k + 1] ?? run.finished.getTime()) - t);
  const longestBatch = Math.max(...durations);
  const longestWait = Math.max(...waits);
  const p99 = [...waits].sort((a, b) => a - b)[Math.floor(waits.length * 0.99)] ?? 0;
  console.log(
    `backlog: ${count.toLocaleString('en-US')} due orders placed in ${ms(insertTime)}, cancelled in ${batches.length} batches ` +
      `over ${ms(drainTime)} (longest batch ${ms(longestBatch)}, median ${ms(durations.sort((a, b) => a - b)[durations.length >> 1]!)}); ` +
      `meanwhile ${buyers} buyers placed and paid ${placed} orders: longest wait ${ms(longestWait)}, p99 ${ms(p99)}`,
  );

  tally.expectNone('buyers meet no error while the backlog drains', errors.length, errors.slice(0, 5));
  tally.expectNone('no deadlock', (await deadlocks()) - deadlocksBefore);
  expect(await statesOf(db.pool, prefix)).toEqual({ 4: count });
  expect(Number(run.processed)).toBe(count);
  expect(Number(run.errors)).toBe(0);
  // Batches of batch_size, not one giant transaction (nothing else locks these orders, so every batch
  // but the last is full, even when max_run_time ends a run and the next goes on), and buyers really
  // were served during the drain.
  const { batch_size: batchSize } = (
    await db.pool.query<{ batch_size: number }>('select batch_size from order_automation.settings')
  ).rows[0]!;
  expect(batchSize).toBeLessThan(count);
  expect(run.batch_size).toBe(batchSize);
  expect(batches.length).toBe(Math.ceil(count / batchSize));
  expect(placed).toBeGreaterThan(buyers * 5);
  // A buyer waits at most for the batch holding its shelf to commit (plus its own work, on a busy
  // two-core machine): bounded by a batch, never by the backlog.
  tally.expectNone('no buyer waits longer than about one batch', longestWait > 2 * longestBatch + 1000 ? 1 : 0, {
    longestWait,
    longestBatch,
  });
  expect(longestWait).toBeLessThan(drainTime / 4);
  await expectInvariants(db.pool, tally);
  await expectConserved(db.pool, before, tally);
}, 120_000);
