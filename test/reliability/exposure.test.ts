// What a shop's own rules and other roles can expect of the package: its hold, release,
// payment_started and extend_receipt act with the caller's rights, so a shop's row-level security and
// column grants bind them as they bind pay_order; NOTIFY order_automation, which any role may send
// or LISTEN to (PostgreSQL has no right for either), tells a listener nothing but "events were
// written", and a flood of it neither changes what a watcher yields nor makes it read without bound;
// and each state-changing transaction costs PostgreSQL's notify queue one small entry.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { placeOrder, watchEvents, type OrderEvent } from '../../src/index.js';
import { admin as asSuperuser, seedBookstore, type TestDatabase } from '../helpers.js';
import { openFigures, reliabilityDatabase, sleep, sqlstateOf } from './support.js';

const tally = openFigures(import.meta.url);
const suffix = randomBytes(4).toString('hex');
const buyerA = `rls_a_${suffix}`;
const buyerB = `rls_b_${suffix}`;
const clerk = `clerk_${suffix}`;
const noisy = `noisy_${suffix}`;
let db: TestDatabase;

const as = (role: string) => {
  const url = new URL(db.url);
  url.username = role;
  return url.toString();
};
async function connectAs(role: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: as(role) });
  await client.connect();
  return client;
}

beforeAll(async () => {
  db = await reliabilityDatabase();
  await seedBookstore(db.pool, { stock: 100_000 });
  await db.pool.query(`
    create role ${buyerA} login in role order_automation_app;
    create role ${buyerB} login in role order_automation_app;
    create role ${clerk} login;
    create role ${noisy} login;
    insert into "user" (user_id, balance) values ('${buyerA}', 100000), ('${buyerB}', 100000)`);
});
afterAll(async () => {
  await db?.drop();
  await asSuperuser((server) =>
    server.query(`drop role if exists ${buyerA}; drop role if exists ${buyerB};
                  drop role if exists ${clerk}; drop role if exists ${noisy}`),
  );
});

const line = JSON.stringify([{ book_id: 'book1', count: 1, price: 10 }]);

describe("a shop's row-level security and column grants", () => {
  test("bind hold, release, payment_started and extend_receipt as they bind pay_order: another buyer's order does not exist for you, and without UPDATE you cannot act", async () => {
    // The shop's rule: a buyer sees and changes only their own orders.
    await db.pool.query(`
      alter table new_order enable row level security;
      create policy own_orders on new_order using (user_id = current_user) with check (user_id = current_user);
      grant usage on schema order_automation to ${clerk};
      grant select on new_order, order_automation.settings to ${clerk};
      grant execute on function order_automation.hold(text, text), order_automation.release(text),
        order_automation.payment_started(text, interval), order_automation.extend_receipt(text, interval) to ${clerk}`);
    const a = await connectAs(buyerA);
    const b = await connectAs(buyerB);
    const c = await connectAs(clerk);
    try {
      await b.query(`select order_automation.place_order('rls_b1', current_user, 'store1', $1)`, [line]);
      await b.query(`select order_automation.place_order('rls_b2', current_user, 'store1', $1)`, [line]);
      await b.query(`select order_automation.pay_order('rls_b2'); select order_automation.ship_order('rls_b2')`);
      await b.query(`select order_automation.hold('rls_b1', 'b holds it')`);
      const breaches: string[] = [];
      const expectRefused = async (client: pg.Client, who: string, sql: string, code: string) => {
        tally.inputsTried++;
        const outcome = await client.query(sql).then(
          (r) => ({ leaked: JSON.stringify(r.rows[0]).slice(0, 300) }),
          (e: unknown) => ({ code: sqlstateOf(e) }),
        );
        if ('leaked' in outcome) breaches.push(`${who}: ${sql} ran and returned ${outcome.leaked}`);
        else if (outcome.code !== code) breaches.push(`${who}: ${sql} refused with ${outcome.code}, not ${code}`);
      };
      // The lifecycle functions already run with the caller's rights: the order does not exist for A.
      await expectRefused(a, 'buyer A', `select * from order_automation.pay_order('rls_b1')`, 'OA005');
      for (const call of [
        `hold('rls_b2', 'not yours')`,
        `release('rls_b1')`,
        `payment_started('rls_b1')`,
        `extend_receipt('rls_b2')`,
      ]) {
        await expectRefused(a, 'buyer A', `select * from order_automation.${call}`, 'OA005');
        // The clerk may read every order but change none: the same calls are refused for lack of UPDATE.
        await expectRefused(c, 'a clerk without UPDATE', `select * from order_automation.${call}`, '42501');
      }
      tally.expectNone(
        "a shop's row-level security and grants bind the hold/grace/extension functions",
        breaches.length,
        breaches,
      );

      // Nothing changed, and the owner of the orders still can.
      const { rows } = await db.pool.query(
        `select order_id, held_at is not null as held, receipt_extended_at is null as not_extended from new_order where order_id like 'rls_b%' order by 1`,
      );
      expect(rows).toEqual([
        { order_id: 'rls_b1', held: true, not_extended: true },
        { order_id: 'rls_b2', held: false, not_extended: true },
      ]);
      await b.query(`select order_automation.release('rls_b1')`);
      await b.query(`select order_automation.payment_started('rls_b1')`);
      await b.query(`select order_automation.extend_receipt('rls_b2')`);
      const own = await b.query(`select order_id, state from order_automation.hold('rls_b2', 'my own')`);
      expect(own.rows).toEqual([{ order_id: 'rls_b2', state: 2 }]);
      const events = await db.pool.query<{ order_id: string; cause: string; note: string | null }>(
        `select order_id, cause, note from order_automation.order_event where order_id like 'rls_b%' and from_state = to_state order by id`,
      );
      expect(events.rows.map((e) => `${e.order_id} ${e.cause}`)).toEqual([
        'rls_b1 hold',
        'rls_b1 release',
        'rls_b1 payment_started',
        'rls_b2 receipt_extended',
        'rls_b2 hold',
      ]);
    } finally {
      await Promise.all([a.end(), b.end(), c.end()]);
      await db.pool.query(`drop policy own_orders on new_order; alter table new_order disable row level security`);
    }
  });
});

describe('NOTIFY order_automation, which any role can send and hear', () => {
  test('a listener without any right hears only that events were written: every payload is the constant "order_event"', async () => {
    const listener = await connectAs(noisy);
    const heard: { channel: string; payload?: string }[] = [];
    listener.on('notification', (n) => heard.push({ channel: n.channel, payload: n.payload }));
    try {
      await listener.query('listen order_automation');
      await placeOrder(db.pool, {
        orderId: 'secret-order-7f3a',
        userId: 'buyer1',
        storeId: 'store1',
        items: [{ bookId: 'book1', count: 1, price: 1 }],
      });
      await db.pool.query(`select order_automation.hold('secret-order-7f3a', 'the buyer''s secret reason')`);
      await db.pool.query(`select order_automation.pay_order('secret-order-7f3a')`);
      for (let i = 0; i < 100 && heard.length < 3; i++) await sleep(20);
      expect(heard.length).toBeGreaterThanOrEqual(3);
      tally.expectNone(
        'a NOTIFY says nothing but "order_event"',
        heard.filter((n) => n.channel !== 'order_automation' || n.payload !== 'order_event').length,
        heard,
      );
    } finally {
      await listener.end();
    }
  });

  test('a NOTIFY flood from a role without any right changes nothing a watcher yields, and the watcher reads at most 20 times a second', async () => {
    // What the watcher sends, counted where it is sent: every query of a client of the watcher.
    const query = pg.Client.prototype.query;
    let watcherQueries = 0;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const params = (this as unknown as { connectionParameters: { application_name?: string } }).connectionParameters;
      if (params.application_name === 'order_automation_watch') watcherQueries++;
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof query;
    const start = Number(
      (await db.pool.query('select coalesce(max(id), 0) id from order_automation.order_event')).rows[0].id,
    );

    const controller = new AbortController();
    const yielded: OrderEvent[] = [];
    const watching = (async () => {
      for await (const event of watchEvents(db.url, {
        afterId: start,
        signal: controller.signal,
        pollIntervalMs: 60_000,
      })) {
        yielded.push(event);
      }
    })();
    const flooder = await connectAs(noisy);
    const writer = new pg.Client({ connectionString: db.url });
    await writer.connect();
    const started = Date.now();
    let notifications = 0;
    try {
      // Thousands of transactions, each a NOTIFY (with payloads that look like anything), and one
      // transaction of 10,000 distinct ones, while 30 real orders are placed.
      const flood = (async () => {
        await flooder.query(
          `select pg_notify('order_automation', 'order_event ' || g) from generate_series(1, 10000) g`,
        );
        notifications += 10_000;
        for (let i = 0; i < 3000; i++) {
          await flooder.query(`select pg_notify('order_automation', $1)`, [
            i % 2 ? 'order_event' : JSON.stringify({ id: i, orderId: `forged${i}` }),
          ]);
          notifications++;
        }
      })();
      for (let i = 0; i < 30; i++) {
        await writer.query(`select order_automation.place_order($1, 'buyer1', 'store1', $2)`, [`flood${i}`, line]);
        await sleep(5);
      }
      await flood;
      for (let i = 0; i < 200 && yielded.length < 30; i++) await sleep(25);
    } finally {
      controller.abort();
      await watching;
      pg.Client.prototype.query = query;
      await flooder.end();
      await writer.end();
    }
    const elapsed = Date.now() - started;
    tally.faultsInjected += notifications;
    expect(yielded.map((e) => e.orderId)).toEqual(Array.from({ length: 30 }, (_, i) => `flood${i}`));
    // Its reads: all but LISTEN and the one that decides where to begin.
    const watcherReads = watcherQueries - 2;
    // At most one read per 50 ms, plus the first (where to begin) and the one that pages on.
    const allowed = Math.ceil(elapsed / 50) + 5;
    console.log(`NOTIFY flood: ${notifications} notifications in ${elapsed} ms cost the watcher ${watcherReads} reads`);
    tally.expectNone(
      `a NOTIFY flood of ${notifications} costs the watcher at most ${allowed} reads in ${elapsed} ms`,
      watcherReads > allowed ? 1 : 0,
      { watcherReads, allowed, elapsed },
    );
  }, 60_000);
});

describe("PostgreSQL's notify queue", () => {
  test('a listener idle in a transaction holds the queue: each state-changing transaction adds one small entry, whatever the number of orders it changes', async () => {
    const listener = await connectAs(noisy);
    const writer = new pg.Client({ connectionString: db.url });
    await writer.connect();
    /** The queue's size in PostgreSQL 15: 8 GB (half of its 16 GB of SLRU pages of 8 kB). */
    const queueBytes = 8 * 1024 ** 3;
    const usage = async () =>
      Number((await writer.query<{ u: number }>('select pg_notification_queue_usage() as u')).rows[0]!.u);
    try {
      await listener.query('listen order_automation');
      await listener.query('begin');
      await listener.query('select 1'); // idle in transaction: it reads no notification until it ends
      const u0 = await usage();
      const transactions = 2000;
      for (let i = 0; i < transactions; i++) {
        // Placed, paid and held in one transaction: three statements that each NOTIFY.
        await writer.query(`begin;
          select order_automation.place_order('queue${i}', 'buyer1', 'store1', '${line}');
          select order_automation.pay_order('queue${i}');
          select order_automation.hold('queue${i}', 'queued');
          commit`);
      }
      const u1 = await usage();
      const perTransaction = ((u1 - u0) * queueBytes) / transactions;
      // One transaction that cancels 1,111 orders in one statement, and one that releases 500 one by one.
      await writer.query(`update new_order set state = 4 where order_id like 'queue%' and order_id < 'queue2'`);
      await writer.query(
        `begin; ${Array.from({ length: 500 }, (_, i) => `select order_automation.release('queue${200 + i}');`).join(' ')} commit`,
      );
      const u2 = await usage();
      tally.faultsInjected++;
      console.log(
        `notify queue: ${perTransaction.toFixed(0)} bytes per state-changing transaction; 8 GB holds ${(queueBytes / perTransaction / 1e6).toFixed(0)} million of them`,
      );
      // An entry is ~40 bytes (header, channel, payload); pages are filled whole, so allow a page's slack.
      expect(u1 - u0).toBeGreaterThan(0);
      tally.expectNone('one entry per transaction, whatever it changes', perTransaction > 64 ? 1 : 0, perTransaction);
      tally.expectNone(
        'two more transactions take at most a page',
        (u2 - u1) * queueBytes > 8192 ? 1 : 0,
        (u2 - u1) * queueBytes,
      );
    } finally {
      await listener.query('rollback').catch(() => undefined);
      await listener.end();
      await writer.end();
    }
  }, 120_000);
});
