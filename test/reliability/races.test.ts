// "Each order is processed at most once, whatever runs at the same time", tried with real
// parallel connections: buyers paying while cancellers run, runners of the same procedure side by
// side, buyers confirming receipt while the auto-confirm runs. Every check is SQL over the database.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cancelExpiredOrders, confirmShippedOrders } from '../../src/index.js';
import { conserved, seedBookstore, type TestDatabase } from '../helpers.js';
import {
  bulkOrders,
  expectConserved,
  expectInvariants,
  openFigures,
  parallel,
  reliabilityDatabase,
  type Shop,
  sleep,
  sqlstateOf,
  statesOf,
} from './support.js';

const tally = openFigures(import.meta.url);
const shop: Shop = { buyers: 24, stores: 6, books: 6 };
let db: TestDatabase;

beforeAll(async () => {
  db = await reliabilityDatabase();
  await seedBookstore(db.pool, { ...shop, balance: 1_000_000_000_000, stock: 10_000_000 });
});
afterAll(async () => db?.drop());

type Job = 'cancel_expired_orders' | 'confirm_shipped_orders';

/** Runs of a job whose lifetimes overlapped another run of the same job started since `since`. */
async function overlappingRuns(job: Job, sinceId: number): Promise<number> {
  const { rows } = await db.pool.query<{ n: string }>(
    `
    select count(*) n from order_automation.run a
     where a.job = $1 and a.id > $2 and exists (
       select from order_automation.run b where b.job = a.job and b.id > $2 and b.id <> a.id
          and b.started_at < a.finished_at and a.started_at < b.finished_at)`,
    [job, sinceId],
  );
  return Number(rows[0]!.n);
}

async function lastRunId(): Promise<number> {
  return Number(
    (await db.pool.query<{ id: string }>('select coalesce(max(id), 0) id from order_automation.run')).rows[0]!.id,
  );
}

/** Sum of processed and of errors over the runs of `job` since `sinceId`. */
async function runTotals(
  job: Job,
  sinceId: number,
): Promise<{ runs: number; processed: number; errors: number; unfinished: number }> {
  const { rows } = await db.pool.query<{ runs: string; processed: string; errors: string; unfinished: string }>(
    `
    select count(*) runs, coalesce(sum(processed), 0) processed, count(error) errors, count(*) filter (where finished_at is null) unfinished
      from order_automation.run where job = $1 and id > $2`,
    [job, sinceId],
  );
  const r = rows[0]!;
  return {
    runs: Number(r.runs),
    processed: Number(r.processed),
    errors: Number(r.errors),
    unfinished: Number(r.unfinished),
  };
}

async function eventsOf(prefix: string, cause: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: string }>(
    `select count(*) n from order_automation.order_event where starts_with(order_id, $1) and cause = $2`,
    [prefix, cause],
  );
  return Number(rows[0]!.n);
}

/** Each seller's balance minus the totals of the received orders of its store: constant when credited exactly once. */
async function sellerLedger(): Promise<Record<string, number>> {
  const { rows } = await db.pool.query<{ user_id: string; unexplained: string }>(`
    select u.user_id, u.balance - coalesce((select sum(d.count::bigint * d.price) from new_order o
                                              join new_order_detail d using (order_id)
                                              join user_store s on s.store_id = o.store_id
                                             where s.user_id = u.user_id and o.state = 3), 0) as unexplained
      from "user" u where u.user_id like 'seller%' order by u.user_id`);
  return Object.fromEntries(rows.map((r) => [r.user_id, Number(r.unexplained)]));
}

describe('buyers and the canceller at the same time', () => {
  test('buyers paying due orders while four cancellers run: every order ends paid or cancelled, no paid order is cancelled, none is processed twice, money and stock are conserved', async () => {
    const prefix = 'pay_';
    const count = 3000;
    const cancellers = 4;
    const buyers = 10;
    const before = await conserved(db.pool);
    const since = await lastRunId();
    // Due an hour ago, oldest deadline first: the order the cancellers take them in.
    const ids = await bulkOrders(db.pool, { ...shop, prefix, count, due: true, lines: 2 });

    let buyersDone = 0;
    const runs: { connection: number; cancelled: number }[] = [];
    const paid = new Set<string>();
    const started = new Set<string>();
    const unexpected: string[] = [];
    let lostToCanceller = 0;
    await parallel(db.url, cancellers + buyers, tally, async (client, i) => {
      if (i < cancellers) {
        // Several runs each, with different batch sizes, until the buyers are done and nothing is due.
        for (;;) {
          const { cancelled } = await cancelExpiredOrders(client, { batchSize: [13, 50, 120, 400][i] });
          runs.push({ connection: i, cancelled });
          if (cancelled === 0) {
            if (buyersDone === buyers) return;
            await sleep(3);
          }
        }
      }
      // Buyers start at the oldest deadline too (every other one from the newest), so they collide
      // with the cancellers' batches; every third one announces the payment first.
      const k = i - cancellers;
      const mine = ids.filter((_, j) => j % buyers === k);
      if (k % 2 === 1) mine.reverse();
      try {
        for (const id of mine) {
          let announced = false;
          try {
            if (k % 3 === 0) {
              await client.query('select order_automation.payment_started($1::text)', [id]);
              announced = true;
              started.add(id);
            }
            await client.query('select order_automation.pay_order($1::text)', [id]);
            paid.add(id);
          } catch (error) {
            // The one refusal a buyer may meet: the canceller got there first (and never after an
            // announced payment).
            if (sqlstateOf(error) === 'OA001' && !announced) lostToCanceller++;
            else unexpected.push(`${id}: ${sqlstateOf(error)} ${(error as Error).message}`);
          }
        }
      } finally {
        buyersDone++;
      }
    });
    tally.ordersRaced += count;

    tally.expectNone('buyers meet no error but "already cancelled"', unexpected.length, unexpected.slice(0, 5));
    const states = await statesOf(db.pool, prefix);
    const cancelled = runs.reduce((total, r) => total + r.cancelled, 0);
    tally.expectNone('every order ends paid or cancelled', count - (states['1'] ?? 0) - (states['4'] ?? 0), states);
    tally.expectNone('every successful payment left the order paid', Math.abs(paid.size - (states['1'] ?? 0)), {
      paid: paid.size,
      states,
    });
    tally.expectNone('the cancellers report each cancellation once', Math.abs(cancelled - (states['4'] ?? 0)), {
      cancelled,
      states,
    });
    tally.expectNone(
      'an order whose payment started is never auto-cancelled',
      [...started].filter((id) => !paid.has(id)).length,
    );
    tally.expectNone(
      'each cancellation is one payment_timeout event',
      Math.abs((await eventsOf(prefix, 'payment_timeout')) - (states['4'] ?? 0)),
    );
    expect(lostToCanceller + paid.size).toBe(count);
    const totals = await runTotals('cancel_expired_orders', since);
    tally.expectNone('the run log counts each cancellation once', Math.abs(totals.processed - cancelled), totals);
    expect(totals).toMatchObject({ errors: 0, unfinished: 0 });
    // The race really happened: runs overlapped, and both sides won some orders.
    expect(await overlappingRuns('cancel_expired_orders', since)).toBeGreaterThan(0);
    expect(new Set(runs.filter((r) => r.cancelled > 0).map((r) => r.connection)).size).toBeGreaterThan(1);
    expect(states['1']).toBeGreaterThan(0);
    expect(states['4']).toBeGreaterThan(0);
    await expectInvariants(db.pool, tally);
    await expectConserved(db.pool, before, tally);
  }, 60_000);
});

describe('runners of the same procedure at once', () => {
  test.each<[Job, 'unpaid' | 'shipped', number]>([
    ['cancel_expired_orders', 'unpaid', 4],
    ['confirm_shipped_orders', 'shipped', 3],
  ])(
    '%s run by pg_cron, by hand and by two app servers at once processes each order exactly once',
    async (job, state, toState) => {
      const prefix = `twice_${state}_`;
      const count = 2000;
      const before = await conserved(db.pool);
      const ledger = await sellerLedger();
      const since = await lastRunId();
      await bulkOrders(db.pool, { ...shop, prefix, count, due: true, state });
      // pg_cron runs the job's fixed command; the others choose their own batch sizes.
      const { rows } = await db.pool.query<{ command: string }>('select order_automation.job_command($1) as command', [
        job,
      ]);
      const cronCommand = rows[0]!.command;
      const column = job === 'cancel_expired_orders' ? 'cancelled' : 'confirmed';
      const runners: ((client: pg.Client) => Promise<number>)[] = [
        async (client) => Number((await client.query<Record<string, string>>(cronCommand)).rows[0]![column]),
        async (client) => {
          const result =
            job === 'cancel_expired_orders'
              ? (await cancelExpiredOrders(client, { batchSize: 70 })).cancelled
              : (await confirmShippedOrders(client, { batchSize: 70 })).confirmed;
          return result;
        },
        async (client) =>
          Number(
            (await client.query<Record<string, string>>(`call order_automation.${job}(batch_size => 25)`)).rows[0]![
              column
            ],
          ),
        async (client) =>
          Number(
            (await client.query<Record<string, string>>(`call order_automation.${job}(batch_size => 150)`)).rows[0]![
              column
            ],
          ),
      ];
      const perRunner = await parallel(db.url, runners.length, tally, async (client, i) => {
        let total = 0;
        for (let n = -1; n !== 0;) {
          n = await runners[i]!(client);
          total += n;
        }
        return total;
      });
      tally.ordersRaced += count;

      const processed = perRunner.reduce((a, b) => a + b, 0);
      tally.expectNone('the runners together report each order once', Math.abs(processed - count), perRunner);
      expect(await statesOf(db.pool, prefix)).toEqual({ [toState]: count });
      const cause = job === 'cancel_expired_orders' ? 'payment_timeout' : 'receipt_timeout';
      tally.expectNone('one automation event per order', Math.abs((await eventsOf(prefix, cause)) - count));
      const totals = await runTotals(job, since);
      tally.expectNone('the run log counts each order once', Math.abs(totals.processed - count), totals);
      expect(totals).toMatchObject({ errors: 0, unfinished: 0 });
      expect(perRunner.filter((n) => n > 0).length).toBeGreaterThan(1);
      const after = await sellerLedger();
      tally.expectNone(
        'each seller is credited exactly the totals of its received orders',
        Object.keys(ledger).filter((s) => ledger[s] !== after[s]).length,
        { ledger, after },
      );
      await expectInvariants(db.pool, tally);
      await expectConserved(db.pool, before, tally);
    },
    60_000,
  );
});

describe('a buyer confirming receipt while the auto-confirm runs', () => {
  test('eight buyers confirming receipt while two auto-confirm runners work: each order is received once and its seller credited exactly once', async () => {
    const prefix = 'recv_';
    const count = 2000;
    const confirmers = 2;
    const buyers = 8;
    const before = await conserved(db.pool);
    const ledger = await sellerLedger();
    const ids = await bulkOrders(db.pool, { ...shop, prefix, count, due: true, state: 'shipped', lines: 2 });
    let buyersDone = 0;
    const unexpected: string[] = [];
    const results = await parallel(db.url, confirmers + buyers, tally, async (client, i) => {
      let confirmed = 0;
      if (i < confirmers) {
        for (;;) {
          const n = (await confirmShippedOrders(client, { batchSize: [40, 90][i] })).confirmed;
          confirmed += n;
          if (n === 0) {
            if (buyersDone === buyers) return confirmed;
            await sleep(3);
          }
        }
      }
      const k = i - confirmers;
      const mine = ids.filter((_, j) => j % buyers === k);
      if (k % 2 === 1) mine.reverse();
      try {
        for (const id of mine) {
          await client.query('select order_automation.confirm_receipt($1::text)', [id]).then(
            () => confirmed++,
            (error: unknown) => {
              if (sqlstateOf(error) !== 'OA001')
                unexpected.push(`${id}: ${sqlstateOf(error)} ${(error as Error).message}`);
            },
          );
        }
      } finally {
        buyersDone++;
      }
      return confirmed;
    });
    tally.ordersRaced += count;

    tally.expectNone('buyers meet no error but "already received"', unexpected.length, unexpected.slice(0, 5));
    const auto = results.slice(0, confirmers).reduce((a, b) => a + b, 0);
    const manual = results.slice(confirmers).reduce((a, b) => a + b, 0);
    tally.expectNone('automatic and manual confirmations add up to the orders', Math.abs(auto + manual - count), {
      auto,
      manual,
    });
    expect(await statesOf(db.pool, prefix)).toEqual({ 3: count });
    tally.expectNone(
      'each automatic confirmation is one receipt_timeout event',
      Math.abs((await eventsOf(prefix, 'receipt_timeout')) - auto),
    );
    tally.expectNone(
      'each manual confirmation is one confirm_receipt event',
      Math.abs((await eventsOf(prefix, 'confirm_receipt')) - manual),
    );
    expect(auto).toBeGreaterThan(0);
    expect(manual).toBeGreaterThan(0);
    const after = await sellerLedger();
    tally.expectNone(
      'each seller is credited exactly the totals of its received orders',
      Object.keys(ledger).filter((s) => ledger[s] !== after[s]).length,
      { ledger, after },
    );
    await expectInvariants(db.pool, tally);
    await expectConserved(db.pool, before, tally);
  }, 60_000);
});
