// watchEvents(): a live feed of order events woken by NOTIFY, that survives a dropped connection
// without losing or repeating an event, including events whose transactions commit out of id order.
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { migrate, placeOrder, watchEvents, type OrderEvent, type WatchOptions } from '../src/index.js';
import { seedBookstore } from './helpers.js';
import { ownServer, type OwnServer } from './reliability/own-server.js';
import { endPool, newClient, newPool } from './setup/connections.js';

// A server of the file's own. The watcher delivers only events of transactions older than every
// transaction still running on the server (the snapshot's xmin is server-wide): on the shared one, a
// transaction of another test file that runs for seconds (a lock held on purpose, a batch made to
// sleep) holds the events back, and once it ends nothing wakes the watcher before its next poll.
let server: OwnServer;
let db: { url: string; pool: pg.Pool };
beforeAll(async () => {
  server = await ownServer();
  await migrate(server.url, { schedule: false });
  db = { url: server.url, pool: newPool({ connectionString: server.url }) };
  await seedBookstore(db.pool, { stock: 100_000 });
});
afterAll(async () => {
  if (db) await endPool(db.pool);
  await server?.stop();
});

/** Watches with `options` until `done` says so or `ms` have passed, then stops the watcher. */
async function collect(
  options: WatchOptions,
  done: (seen: OrderEvent[]) => boolean,
  ms = 20_000,
): Promise<OrderEvent[]> {
  const seen: OrderEvent[] = [];
  // An abort wakes a watcher that sleeps until its next poll; return() would wait for it.
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), ms);
  try {
    for await (const event of watchEvents(db.url, { ...options, signal: stop.signal })) {
      seen.push(event);
      if (done(seen)) break;
    }
  } finally {
    clearTimeout(timer);
  }
  return seen;
}

const place = (id: string) =>
  placeOrder(db.pool, {
    orderId: id,
    userId: 'buyer1',
    storeId: 'store2',
    items: [{ bookId: 'book1', count: 1, price: 1 }],
  });

/** Where the tests start watching: a loaded machine may connect the watcher after the first insert. */
async function lastEventId(): Promise<number> {
  return Number((await db.pool.query('select coalesce(max(id), 0) id from order_automation.order_event')).rows[0].id);
}

/** Terminates the watcher's connection, once it has one (it may be between two). */
async function killWatcher(): Promise<void> {
  for (let tries = 0; tries < 100; tries++) {
    const { rows } = await db.pool.query<{
      killed: boolean;
    }>(`select pg_terminate_backend(pid) as killed from pg_stat_activity
      where application_name = 'order_automation_watch' and datname = current_database()`);
    if (rows.some((r) => r.killed)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the watcher never reconnected');
}

describe('watchEvents', () => {
  test('new events arrive at once, woken by NOTIFY, not by polling', async () => {
    const afterId = await lastEventId();
    const started = Date.now();
    const seen = collect({ afterId, pollIntervalMs: 60_000 }, (s) => s.length >= 3);
    await new Promise((r) => setTimeout(r, 300));
    for (const id of ['w1', 'w2', 'w3']) await place(id);
    const events = await seen;
    expect(events.map((e) => [e.orderId, e.to, e.cause])).toEqual([
      ['w1', 'unpaid', 'place_order'],
      ['w2', 'unpaid', 'place_order'],
      ['w3', 'unpaid', 'place_order'],
    ]);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  test('afterId resumes after a given event, with nothing lost or repeated', async () => {
    const from = await lastEventId();
    for (const id of ['a1', 'a2', 'a3', 'a4']) await place(id);
    const all = (
      await db.pool.query<{ id: string }>('select id from order_automation.order_event where id > $1 order by id', [
        from,
      ])
    ).rows.map((r) => Number(r.id));
    expect(all).toHaveLength(4);
    const events = await collect({ afterId: all[0] }, (s) => s.length >= 3, 5000);
    expect(events.map((e) => e.id)).toEqual(all.slice(1));
  });

  test('an event whose transaction commits after a later id is not skipped', async () => {
    const slow = newClient({ connectionString: db.url });
    await slow.connect();
    try {
      const afterId = await lastEventId();
      const seen = collect(
        { afterId, pollIntervalMs: 200 },
        (s) => s.some((e) => e.orderId === 'slow') && s.some((e) => e.orderId === 'fast'),
      );
      await new Promise((r) => setTimeout(r, 300));
      await slow.query('begin');
      await slow.query(
        `select order_automation.place_order('slow', 'buyer1', 'store1', '[{"book_id":"book1","count":1,"price":1}]')`,
      );
      await place('fast'); // a larger id (another store: no lock to wait for), committed first
      await new Promise((r) => setTimeout(r, 500));
      await slow.query('commit');
      const events = await seen;
      // The trap: 'slow' has the smaller id but committed last, so a reader going by "id > last id seen"
      // would have moved past it. Delivered in transaction order, both arrive.
      expect(events.map((e) => e.orderId)).toEqual(['slow', 'fast']);
      expect(events[0]!.id).toBeLessThan(events[1]!.id);
    } finally {
      await slow.end();
    }
  });

  test('killing its connection mid-stream loses and repeats nothing', async () => {
    const reconnects: unknown[] = [];
    const options = {
      afterId: await lastEventId(),
      pollIntervalMs: 200,
      reconnectDelayMs: 100,
      onReconnect: (e: unknown) => reconnects.push(e),
    };
    const total = 300;
    const seen = collect(options, (s) => s.filter((e) => e.orderId.startsWith('k')).length >= total, 30_000);
    await new Promise((r) => setTimeout(r, 300));
    let kills = 0;
    for (let i = 0; i < total; i++) {
      await place(`k${i}`);
      if (i % 100 === 50) {
        await killWatcher();
        kills++;
      }
    }
    const events = (await seen).filter((e) => e.orderId.startsWith('k'));
    expect(reconnects).toHaveLength(kills);
    expect(events.map((e) => e.orderId)).toEqual(Array.from({ length: total }, (_, i) => `k${i}`));
    expect(new Set(events.map((e) => e.id)).size).toBe(total);
  }, 60_000);
});
