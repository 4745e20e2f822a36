// Bounded inputs: every interval setting has an upper bound (an absurd one, '300000 years', once
// passed the constraints and then broke every order or every run with "timestamp out of range"), the
// reasons, notes, causes and ids the package takes have documented length limits the database
// enforces, and the order history is read in pages bounded by size as well as by rows, so one huge
// row (written before the limits) cannot exhaust a reader's memory.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  cancelExpiredOrders,
  confirmShippedOrders,
  extendReceipt,
  holdOrder,
  InvalidArgumentError,
  InvalidSettingError,
  payOrder,
  paymentStarted,
  placeOrder,
  purgeCancelledOrders,
  purgeHistory,
  readOrderEvents,
  releaseOrder,
  setStoreSettings,
  shipOrder,
  updateSettings,
  watchEvents,
  type OrderEvent,
} from '../../src/index.js';
import { cliInProcess } from '../cli-in-process.js';
import { seedBookstore, type TestDatabase } from '../helpers.js';
import { expectInvariants, openFigures, reliabilityDatabase } from './support.js';

const tally = openFigures(import.meta.url);

/** The documented limits (README "Guarantees"). */
const limits = { id: 255, reason: 1000, note: 1000, cause: 63 };
/** The documented upper bound of every interval setting. */
const upperBounds: Record<string, string> = {
  payment_timeout: '365 days',
  receipt_timeout: '365 days',
  max_run_time: '1 day',
  payment_grace: '365 days',
  receipt_extension: '365 days',
  remind_before: '365 days',
  purge_cancelled_after: '3650 days',
  history_retention: '3650 days',
  precision: '1 minute',
};
/** What a page of the order history may hold: 1 MiB of text, give or take its last row. */
const pageBytes = 1024 * 1024;

let db: TestDatabase;
beforeAll(async () => {
  db = await reliabilityDatabase();
  await seedBookstore(db.pool, { buyers: 3, stores: 2, books: 3, balance: 1_000_000_000, stock: 1_000_000 });
});
afterAll(async () => db?.drop());

const items = [{ bookId: 'book1', count: 1, price: 10 }];
const place = (orderId: string, storeId = 'store1') =>
  placeOrder(db.pool, { orderId, userId: 'buyer1', storeId, items });

/** Runs `sql` in a transaction that is rolled back: what it was refused with, or undefined. */
async function refusal(sql: string, values: unknown[] = []): Promise<pg.DatabaseError | undefined> {
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    return await client.query(sql, values).then(
      () => undefined,
      (e: unknown) => e as pg.DatabaseError,
    );
  } finally {
    await client.query('rollback').catch(() => undefined);
    client.release();
  }
}

const utf8Bytes = (e: OrderEvent) =>
  Buffer.byteLength(e.orderId) + Buffer.byteLength(e.cause) + Buffer.byteLength(e.note ?? '');

describe('interval settings have upper bounds', () => {
  test("every interval setting (and store override) refuses '300000 years' and anything past its bound, naming it; the bound itself is taken", async () => {
    const { rows } = await db.pool.query<{ column_name: string }>(`
      select column_name from information_schema.columns
       where table_schema = 'order_automation' and table_name = 'settings' and data_type = 'interval'`);
    expect(rows.map((r) => r.column_name).sort(), 'a new interval setting needs its bound here').toEqual(
      Object.keys(upperBounds).sort(),
    );
    const accepted: string[] = [];
    const tries: [table: string, column: string, bound: string][] = [
      ...Object.entries(upperBounds).map(([column, bound]) => ['settings', column, bound] as [string, string, string]),
      ['store_settings', 'payment_timeout', '365 days'],
      ['store_settings', 'receipt_timeout', '365 days'],
    ];
    for (const [table, column, bound] of tries) {
      const set = (value: string) =>
        table === 'settings'
          ? refusal(`update order_automation.settings set ${column} = $1::interval`, [value])
          : refusal(
              `insert into order_automation.store_settings (store_id, ${column}) values ('store1', $1::interval)`,
              [value],
            );
      for (const value of ['300000 years', '178000000 years', `${bound} 1 second`]) {
        tally.inputsTried++;
        const error = await set(value);
        if (error === undefined) accepted.push(`${table}.${column} = '${value}'`);
        else {
          expect(error.code, `${table}.${column} = '${value}': ${error.message}`).toBe('23514');
          expect(error.constraint).toContain(column);
        }
      }
      tally.inputsTried++;
      expect(await set(bound), `${table}.${column} = '${bound}'`).toBeUndefined();
    }
    tally.expectNone('no interval setting takes a value past its bound', accepted.length, accepted);

    // Through the module: a typed error, and nothing changes.
    tally.inputsTried += 2;
    await expect(updateSettings(db.pool, { remindBefore: '300000 years' })).rejects.toBeInstanceOf(InvalidSettingError);
    await expect(setStoreSettings(db.pool, 'store1', { paymentTimeout: '300000 years' })).rejects.toBeInstanceOf(
      InvalidSettingError,
    );
  });

  test("payment_started's grace and extend_receipt's extension have the same bounds as their settings", async () => {
    const unpaid = await place('grace_bound');
    const shipped = await place('extension_bound');
    await payOrder(db.pool, shipped.orderId);
    await shipOrder(db.pool, shipped.orderId);
    tally.inputsTried += 4;
    await expect(paymentStarted(db.pool, unpaid.orderId, '300000 years')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(paymentStarted(db.pool, unpaid.orderId, '365 days 1 second')).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    await expect(extendReceipt(db.pool, shipped.orderId, '300000 years')).rejects.toBeInstanceOf(InvalidArgumentError);
    expect((await paymentStarted(db.pool, unpaid.orderId, '365 days')).payDeadline!.getTime()).toBeGreaterThan(
      Date.now() + 364 * 86_400_000,
    );
    expect((await extendReceipt(db.pool, shipped.orderId, '365 days')).receiptExtendedAt).not.toBeNull();
  });

  test('with every setting at its upper bound, orders are placed, paid, shipped, extended, held and released, and every job does its work', async () => {
    const bounds = Object.entries(upperBounds)
      .map(([column, bound]) => `${column} = '${bound}'`)
      .join(', ');
    await db.pool.query(`update order_automation.settings set ${bounds}`);
    await setStoreSettings(db.pool, 'store2', { paymentTimeout: '365 days', receiptTimeout: '365 days' });
    try {
      const day = 86_400_000;
      const unpaid = [await place('top_unpaid1'), await place('top_unpaid2', 'store2')];
      await paymentStarted(db.pool, 'top_unpaid1');
      for (const order of unpaid) expect(order.payDeadline!.getTime()).toBeGreaterThan(Date.now() + 364 * day);
      const shipped = [await place('top_shipped1'), await place('top_shipped2', 'store2')];
      for (const { orderId } of shipped) {
        await payOrder(db.pool, orderId);
        const order = await shipOrder(db.pool, orderId);
        expect(order.receiptDeadline!.getTime()).toBeGreaterThan(Date.now() + 364 * day);
      }
      await extendReceipt(db.pool, 'top_shipped1');
      await holdOrder(db.pool, 'top_shipped2', 'a review');
      await releaseOrder(db.pool, 'top_shipped2');
      // Each run with its reminders (remind_before at its bound) now, then past every deadline.
      expect((await cancelExpiredOrders(db.pool)).cancelled).toBe(0);
      expect((await confirmShippedOrders(db.pool)).confirmed).toBe(0);
      const reminders = await db.pool.query<{ order_id: string }>(
        `select order_id from order_automation.order_event where cause like '%due_soon' and order_id like 'top_%' order by 1`,
      );
      // All but the order whose receipt deadline was extended by another 365 days.
      expect(reminders.rows.map((r) => r.order_id)).toEqual(['top_shipped2', 'top_unpaid1', 'top_unpaid2']);
      const later = (days: number) => new Date(Date.now() + days * day);
      expect((await cancelExpiredOrders(db.pool, { asOf: later(400) })).cancelled).toBeGreaterThanOrEqual(2);
      expect((await confirmShippedOrders(db.pool, { asOf: later(800) })).confirmed).toBeGreaterThanOrEqual(2);
      expect((await purgeCancelledOrders(db.pool, { asOf: later(4100) })).purged).toBeGreaterThanOrEqual(2);
      await purgeHistory(db.pool);
      const errors = await db.pool.query(`select count(*)::int n from order_automation.run where error is not null`);
      tally.expectNone('no run fails at the upper bounds', errors.rows[0].n);
      await expectInvariants(db.pool, tally);
    } finally {
      await db.pool.query(`update order_automation.settings set
        payment_timeout = default, receipt_timeout = default, max_run_time = default, payment_grace = default,
        receipt_extension = default, remind_before = null, purge_cancelled_after = null, history_retention = default`);
      await db.pool.query(`delete from order_automation.store_settings`);
    }
  });
});

describe('texts and ids have length limits', () => {
  test('reasons, notes, causes and ids past their limits are refused by the database, through the functions and plain SQL; at the limit they are taken', async () => {
    await place('limits1');
    const long = (n: number) => 'x'.repeat(n);
    const tries: { what: string; sql: string; values?: unknown[]; ok: boolean; code?: string }[] = [
      {
        what: 'hold reason at the limit',
        sql: `select order_automation.hold('limits1', $1)`,
        values: [long(limits.reason)],
        ok: true,
      },
      {
        what: 'hold reason past it',
        sql: `select order_automation.hold('limits1', $1)`,
        values: [long(limits.reason + 1)],
        ok: false,
        code: 'OA006',
      },
      // Test-sized, and the database must not store or echo it.
      {
        what: 'hold reason of 10 million characters',
        sql: `select order_automation.hold('limits1', $1)`,
        values: [long(10_000_000)],
        ok: false,
        code: 'OA006',
      },
      ...['hold($1, $2)', 'release($1)', 'payment_started($1)', 'extend_receipt($1)'].map((call) => ({
        what: `${call} with an id past the limit`,
        sql: `select order_automation.${call.replace('$2', "'a reason'")}`,
        values: [long(limits.id + 1)],
        ok: false,
        code: 'OA006',
      })),
      {
        what: 'place_order, id at the limit',
        sql: `select order_automation.place_order($1, 'buyer1', 'store1', '[{"book_id":"book1","count":1,"price":1}]')`,
        values: [long(limits.id)],
        ok: true,
      },
      {
        what: 'place_order, id past it',
        sql: `select order_automation.place_order($1, 'buyer1', 'store1', '[{"book_id":"book1","count":1,"price":1}]')`,
        values: [long(limits.id + 1)],
        ok: false,
        code: '23514',
      },
      {
        what: 'a plain insert of an order, id past the limit',
        sql: `insert into new_order (order_id, user_id, store_id) values ($1, 'buyer1', 'store1')`,
        values: [long(limits.id + 1)],
        ok: false,
        code: '23514',
      },
      {
        what: 'a user id past the limit',
        sql: `insert into "user" (user_id) values ($1)`,
        values: [long(limits.id + 1)],
        ok: false,
        code: '23514',
      },
      {
        what: 'a store id past the limit',
        sql: `insert into user_store (store_id, user_id) values ($1, 'seller1')`,
        values: [long(limits.id + 1)],
        ok: false,
        code: '23514',
      },
      {
        what: 'a book id past the limit',
        sql: `insert into store (store_id, book_id, stock_level) values ('store1', $1, 1)`,
        values: [long(limits.id + 1)],
        ok: false,
        code: '23514',
      },
      {
        what: 'a plain update of hold_reason past the limit',
        sql: `update new_order set hold_reason = $1 where order_id = 'limits1'`,
        values: [long(limits.reason + 1)],
        ok: false,
        code: '23514',
      },
      {
        what: 'a cause at the limit',
        sql: `select order_automation.set_order_state('limits1', 1::smallint, $1)`,
        values: [long(limits.cause)],
        ok: true,
      },
      {
        what: 'a cause past it',
        sql: `select order_automation.set_order_state('limits1', 1::smallint, $1)`,
        values: [long(limits.cause + 1)],
        ok: false,
        code: '23514',
      },
      {
        what: 'a plain update under a cause past the limit',
        sql: `with c as (select set_config('order_automation.cause', $1, true)) update new_order set state = 4 where order_id = 'limits1' and exists (select from c)`,
        values: [long(limits.cause + 1)],
        ok: false,
        code: '23514',
      },
      {
        what: 'an event note past the limit, written by the owner',
        sql: `insert into order_automation.order_event (order_id, from_state, to_state, cause, note) values ('limits1', 0, 0, 'sql', $1)`,
        values: [long(limits.note + 1)],
        ok: false,
        code: '23514',
      },
    ];
    const breaches: string[] = [];
    for (const t of tries) {
      tally.inputsTried++;
      const started = Date.now();
      const error = await refusal(t.sql, t.values);
      if (t.ok && error) breaches.push(`${t.what}: refused (${error.code} ${error.message.slice(0, 200)})`);
      if (!t.ok && !error) breaches.push(`${t.what}: taken`);
      if (!t.ok && error && error.code !== t.code)
        breaches.push(`${t.what}: ${error.code} instead of ${t.code} (${error.message.slice(0, 200)})`);
      if (error && error.message.length > 2000)
        breaches.push(`${t.what}: the message echoes ${error.message.length} characters`);
      if (Date.now() - started > 5000) breaches.push(`${t.what}: took ${Date.now() - started} ms`);
    }
    tally.expectNone('every length limit holds, and only past it', breaches.length, breaches);
  });
});

describe('the history is read in pages bounded by size', () => {
  test('a page holds about 1 MiB of text whatever its row count, and paging on reads every event once, in order; so does watchEvents', async () => {
    const start = Number(
      (await db.pool.query('select coalesce(max(id), 0) id from order_automation.order_event')).rows[0].id,
    );
    // 1,500 events at the limits: 255-character ids and 1,000-character notes of 4-byte characters.
    await db.pool.query(`
      insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
      select lpad(g::text, ${limits.id}, 'p'), 0, 0, 'sql', repeat('😀', ${limits.note}) from generate_series(1, 1500) g`);
    const first = await readOrderEvents(db.pool, { afterId: start, limit: 1000 });
    const firstBytes = first.reduce((sum, e) => sum + utf8Bytes(e), 0);
    tally.expectNone('a page holds at most about 1 MiB of text', firstBytes > pageBytes + 5000 ? 1 : 0, {
      rows: first.length,
      bytes: firstBytes,
    });
    expect(first.length).toBeGreaterThan(0);

    const seen: number[] = [];
    for (let after = start; ;) {
      const page = await readOrderEvents(db.pool, { afterId: after, limit: 1000 });
      if (page.length === 0) break;
      seen.push(...page.map((e) => e.id));
      after = page.at(-1)!.id;
    }
    expect(seen).toHaveLength(1500);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
    expect(new Set(seen).size).toBe(1500);

    // The watcher does not take a page cut by size for the end: it reads on at once (no poll wait).
    const controller = new AbortController();
    const watched: number[] = [];
    const timer = setTimeout(() => controller.abort(), 20_000);
    for await (const event of watchEvents(db.url, {
      afterId: start,
      signal: controller.signal,
      pollIntervalMs: 60_000,
    })) {
      watched.push(event.id);
      if (watched.length === 1500) break;
    }
    clearTimeout(timer);
    expect(watched).toEqual(seen);
  });

  test('events written before the limits existed (5-million-character notes, a long cause) are read cut at the limit by readOrderEvents, watchEvents and the CLI', async () => {
    const start = Number(
      (await db.pool.query('select coalesce(max(id), 0) id from order_automation.order_event')).rows[0].id,
    );
    // Written before the limits existed: an upgrade leaves such rows as they are.
    await db.pool.query(`
      do $$ declare c text; begin
        for c in select conname from pg_constraint where conrelid = 'order_automation.order_event'::regclass and contype = 'c' loop
          execute format('alter table order_automation.order_event drop constraint %I', c);
        end loop;
      end $$`);
    await db.pool.query(`
      insert into order_automation.order_event (order_id, from_state, to_state, cause, note)
      select 'legacy' || g, 0, 0, case when g = 1 then repeat('c', 100000) else 'hold' end, repeat(md5(g::text), 156250)
        from generate_series(1, 8) g`);
    tally.inputsTried += 8;

    const cut = (events: OrderEvent[]) =>
      events.filter((e) => (e.note?.length ?? 0) > limits.note + 1 || e.cause.length > limits.cause + 1).length;
    const read = await readOrderEvents(db.pool, { afterId: start });
    expect(read).toHaveLength(8);
    tally.expectNone(
      'readOrderEvents cuts texts past their limits',
      cut(read),
      read.map((e) => [e.note?.length, e.cause.length]),
    );
    expect(read[1]!.note!.endsWith('…')).toBe(true);

    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 20_000);
    const watched: OrderEvent[] = [];
    for await (const event of watchEvents(db.url, { afterId: start, signal: controller.signal })) {
      watched.push(event);
      if (watched.length === 8) break;
    }
    clearTimeout(timer);
    expect(watched.map((e) => e.id)).toEqual(read.map((e) => e.id));
    tally.expectNone('watchEvents cuts texts past their limits', cut(watched));

    for (const argv of [
      ['events', '--after', String(start)],
      ['events', '--after', String(start), '--json'],
    ]) {
      const { code, stdout } = await cliInProcess(argv, db.url);
      expect(code).toBe(0);
      tally.expectNone(`${argv.join(' ')} prints a bounded output`, stdout.length > 100_000 ? 1 : 0, stdout.length);
    }
  });
});
