// Adopting an existing shop database: the package installs onto the tables of an app of the classic
// bookstore course project (its own types, -1 for cancelled, epoch-second times, its own bookkeeping)
// without changing them, runs the automation on them, and goes away leaving them byte-identical.
import { readdirSync } from 'node:fs';
import { afterAll, describe, expect, test } from 'vitest';
import {
  AdoptionMismatchError,
  AdoptionRequiredError,
  InvalidArgumentError,
  migrate,
  migrationsDir,
  readOrderEvents,
  type MigrateOptions,
} from '../src/index.js';
import { neededColumns, packageColumns } from '../src/adopt.js';
import { main } from '../src/cli/index.js';
import {
  App,
  appChecksums,
  appColumns,
  appConserved,
  appDefinitions,
  appStates,
  createApp,
  type AppShop,
} from './adopt-app.js';
import { createTestDatabase, one, type TestDatabase } from './helpers.js';

const created: TestDatabase[] = [];
afterAll(async () => {
  await Promise.all(created.map((db) => db.drop()));
});

/** A fresh empty database holding the app's schema and a few rows. */
async function appDatabase(): Promise<{ db: TestDatabase; shop: AppShop }> {
  const db = await createTestDatabase({ template: null });
  created.push(db);
  const shop = await createApp(db.pool);
  return { db, shop };
}

const adoptOptions: MigrateOptions = {
  adopt: true,
  schedule: false,
  createdAtColumn: 'create_time',
  shippedAtColumn: 'delivery_time',
  stateCodes: { cancelled: appStates.cancelled },
};

const epoch = (minutesAgo: number) => Math.floor(Date.now() / 1000) - minutesAgo * 60;

/** Orders the app left open before the package came: unpaid, paid and shipped, old and new. */
async function openOrders(db: TestDatabase): Promise<void> {
  await db.pool.query(`
    insert into new_order_detail (order_id, book_id, count, price) values
      ('old-unpaid', 'book1', 2, 101), ('new-unpaid', 'book2', 1, 102), ('zero-unpaid', 'book1', 1, 101),
      ('old-shipped', 'book1', 3, 101), ('new-shipped', 'book3', 1, 103), ('paid', 'book2', 4, 102),
      ('done', 'book1', 1, 101), ('gone', 'book3', 2, 103);
    update store set stock_level = stock_level - 14 where store_id = 'store1' and book_id = 'book1';
    update store set stock_level = stock_level - 5 where store_id = 'store1' and book_id = 'book2';
    update store set stock_level = stock_level - 1 where store_id = 'store1' and book_id = 'book3';
  `);
  await db.pool.query(
    `insert into new_order (order_id, user_id, store_id, state, create_time, delivery_time) values
      ('old-unpaid', 'buyer1', 'store1', 0, $1, 0), ('new-unpaid', 'buyer1', 'store1', 0, $2, 0),
      ('zero-unpaid', 'buyer2', 'store1', 0, 0, 0),
      ('old-shipped', 'buyer2', 'store1', 2, $1, $1), ('new-shipped', 'buyer2', 'store1', 2, $1, $3),
      ('paid', 'buyer3', 'store1', 1, $2, 0), ('done', 'buyer3', 'store1', 3, $1, $1),
      ('gone', 'buyer3', 'store1', -1, $1, 0)`,
    [epoch(60), epoch(1), epoch(0)],
  );
}

describe('adopting the app database', () => {
  test('keeps the app tables and rows, adds only the package own columns, and gives open orders deadlines from the app columns', async () => {
    const { db } = await appDatabase();
    await openOrders(db);
    const definitions = await appDefinitions(db.pool);
    const columns = await appColumns(db.pool);
    const sums = await appChecksums(db.pool);

    const result = await migrate(db.url, adoptOptions);
    expect(result.migrations.length).toBeGreaterThanOrEqual(3);

    // The app's rows, read with its own columns, are what they were; its definitions gained only the
    // package's nullable columns of new_order (no default, no NOT NULL, no constraint), and its indexes and triggers.
    expect(await appChecksums(db.pool, columns)).toEqual(sums);
    const now = await appDefinitions(db.pool);
    expect(definitions.filter((line) => !now.includes(line))).toEqual([]);
    const added = now.filter((line) => !definitions.includes(line));
    expect(added.filter((line) => line.startsWith('constraint '))).toEqual([]);
    expect(
      added
        .filter((line) => line.startsWith('column '))
        .map((line) => line.split(' ').slice(3).join(' '))
        .sort(),
    ).toEqual(
      [
        'created_at timestamp with time zone false  ',
        'paid_at timestamp with time zone false  ',
        'shipped_at timestamp with time zone false  ',
        'received_at timestamp with time zone false  ',
        'cancelled_at timestamp with time zone false  ',
        'pay_deadline timestamp with time zone false  ',
        'receipt_deadline timestamp with time zone false  ',
        'held_at timestamp with time zone false  Set by order_automation.hold(): a held order is neither auto-cancelled nor auto-confirmed',
        'hold_reason text false  ',
        'receipt_extended_at timestamp with time zone false  ',
        'reminded_state smallint false  The state whose due-soon reminder was written (order_automation remind_before): once per order and state',
        "failed_state smallint false  The state in which order_automation last failed to process the order (order_automation.failing_order): it then leaves that state's due index, and later runs retry it after the orders never tried",
      ].sort(),
    );
    expect(
      added.filter((line) => line.startsWith('column ')).every((line) => line.startsWith('column new_order ')),
    ).toBe(true);
    // Only the five tables are the package's concern: book is untouched.
    expect(added.some((line) => / book /.test(line) || line.startsWith('index CREATE INDEX book'))).toBe(false);

    // Deadlines of the open orders: from create_time / delivery_time (epoch seconds), or from now when 0.
    const { rows } = await db.pool.query<{ order_id: string; pay: number | null; receipt: number | null }>(`
      select order_id,
             extract(epoch from pay_deadline - (to_timestamp(nullif(create_time, 0)) + interval '10 minutes'))::float as pay,
             extract(epoch from receipt_deadline - (to_timestamp(nullif(delivery_time, 0)) + interval '60 seconds'))::float as receipt
        from new_order order by order_id`);
    const byId = Object.fromEntries(rows.map((r) => [r.order_id, r]));
    expect(byId['old-unpaid']).toMatchObject({ pay: 0, receipt: null });
    expect(byId['new-unpaid']).toMatchObject({ pay: 0, receipt: null });
    expect(byId['old-shipped']).toMatchObject({ pay: null, receipt: 0 });
    expect(byId['new-shipped']).toMatchObject({ pay: null, receipt: 0 });
    for (const id of ['paid', 'done', 'gone']) expect(byId[id]).toMatchObject({ pay: null, receipt: null });
    const zero = await one<{ from_now: number }>(
      db.pool,
      `select extract(epoch from pay_deadline - now() - interval '10 minutes')::float as from_now from new_order where order_id = 'zero-unpaid'`,
    );
    expect(Math.abs(zero.from_now)).toBeLessThan(60);

    // The settings of an adoption: the app's code for cancelled, and 'automation' bookkeeping by default.
    expect(
      await one(db.pool, 'select bookkeeping, state_unpaid, state_cancelled from order_automation.settings'),
    ).toEqual({ bookkeeping: 'automation', state_unpaid: 0, state_cancelled: -1 });
    // The automation's indexes follow the codes.
    const { rows: indexes } = await db.pool.query<{ indexdef: string }>(
      `select indexdef from pg_indexes where tablename = 'new_order' and indexname = 'new_order_cancelled_at'`,
    );
    expect(indexes[0]!.indexdef).toContain(`WHERE (state = '-1'::integer)`);
  });

  test('the automation cancels the old unpaid order with the app code and returns its books, and confirms the old shipped one paying the store owner, once', async () => {
    const { db } = await appDatabase();
    await openOrders(db);
    await migrate(db.url, adoptOptions);
    const before = await appConserved(db.pool);
    const seller = await one<{ balance: number }>(db.pool, `select balance from "user" where user_id = 'seller1'`);
    const stock = await one<{ stock_level: number }>(
      db.pool,
      `select stock_level from store where store_id = 'store1' and book_id = 'book1'`,
    );

    const cancelled = await one<{ cancelled: string }>(db.pool, 'call order_automation.cancel_expired_orders()');
    const confirmed = await one<{ confirmed: string }>(db.pool, 'call order_automation.confirm_shipped_orders()');
    expect([cancelled.cancelled, confirmed.confirmed]).toEqual(['1', '1']);
    const states = await db.pool.query<{ order_id: string; state: number }>(
      'select order_id, state from new_order order by order_id',
    );
    expect(Object.fromEntries(states.rows.map((r) => [r.order_id, r.state]))).toEqual({
      done: 3,
      gone: -1,
      'new-shipped': 2,
      'new-unpaid': 0,
      'old-shipped': 3,
      'old-unpaid': -1,
      paid: 1,
      'zero-unpaid': 0,
    });
    // Two copies of book1 back on the shelf; the seller of store1 paid 3 * 101 for old-shipped.
    expect(
      (
        await one<{ stock_level: number }>(
          db.pool,
          `select stock_level from store where store_id = 'store1' and book_id = 'book1'`,
        )
      ).stock_level,
    ).toBe(stock.stock_level + 2);
    expect(
      (await one<{ balance: number }>(db.pool, `select balance from "user" where user_id = 'seller1'`)).balance,
    ).toBe(seller.balance + 303);
    expect(await appConserved(db.pool)).toEqual(before);
    // Nothing is due any more: a second run books nothing a second time.
    expect((await one<{ cancelled: string }>(db.pool, 'call order_automation.cancel_expired_orders()')).cancelled).toBe(
      '0',
    );
    expect(
      (await one<{ confirmed: string }>(db.pool, 'call order_automation.confirm_shipped_orders()')).confirmed,
    ).toBe('0');
    expect(await appConserved(db.pool)).toEqual(before);
    // The history names the app's codes: -1 is cancelled.
    const history = await readOrderEvents(db.pool, { orderId: 'old-unpaid' });
    expect(history.map((e) => [e.from, e.to, e.fromState, e.toState, e.cause])).toEqual([
      ['unpaid', 'cancelled', 0, -1, 'payment_timeout'],
    ]);
  });

  test('adopting twice changes nothing', async () => {
    const { db } = await appDatabase();
    await openOrders(db);
    await migrate(db.url, adoptOptions);
    const definitions = await appDefinitions(db.pool);
    const sums = await appChecksums(db.pool);
    const settings = await one(db.pool, 'select * from order_automation.settings');
    const adopted = await db.pool.query(
      'select table_name, added_columns from order_automation.adopted_table order by 1',
    );
    expect(adopted.rows.map((r) => r.table_name)).toEqual([
      'new_order',
      'new_order_detail',
      'store',
      'user',
      'user_store',
    ]);

    const logged: string[] = [];
    expect((await migrate(db.url, { ...adoptOptions, log: (line) => logged.push(line) })).migrations).toEqual([]);
    expect(logged.join('\n')).toContain('already installed');
    expect(await appDefinitions(db.pool)).toEqual(definitions);
    expect(await appChecksums(db.pool)).toEqual(sums);
    expect(await one(db.pool, 'select * from order_automation.settings')).toEqual(settings);
    expect(
      (await db.pool.query('select table_name, added_columns from order_automation.adopted_table order by 1')).rows,
    ).toEqual(adopted.rows);
    // A plain migrate on the adopted database is no install onto foreign tables: it has nothing to do either.
    expect((await migrate(db.url, { schedule: false })).migrations).toEqual([]);
  });

  test('migrate --down removes only what the package added: the app tables and rows stay byte-identical', async () => {
    const { db, shop } = await appDatabase();
    await openOrders(db);
    const definitions = await appDefinitions(db.pool);
    const columns = await appColumns(db.pool);
    const sums = await appChecksums(db.pool);

    await migrate(db.url, adoptOptions);
    // The package at work on the adopted tables: a hold, a reminder's mark, the automation.
    await db.pool.query(`select order_automation.hold('new-unpaid', 'a dispute')`);
    await db.pool.query('call order_automation.cancel_expired_orders()');
    // Partway down, past the adopting release, is refused (the releases before it cannot run on the
    // app's tables); the releases after it revert alone.
    const after = readdirSync(migrationsDir).filter((f) => /^\d{4}_\w+\.ts$/.test(f) && f > '0005_adopt.ts').length;
    await expect(migrate(db.url, { direction: 'down', count: after + 1 })).rejects.toBeInstanceOf(InvalidArgumentError);
    if (after > 0) {
      expect((await migrate(db.url, { direction: 'down', count: after })).migrations).toHaveLength(after);
      await migrate(db.url, { schedule: false });
    }
    const afterAutomation = await appChecksums(db.pool, columns);

    // Down asks first: it drops the package's history with its rows, never the app's tables.
    await expect(migrate(db.url, { direction: 'down' })).rejects.toThrow(
      'migrate --down would drop tables that hold rows: order_automation.order_event, order_automation.run. Nothing was changed.',
    );
    const down = await migrate(db.url, { direction: 'down', confirm: true });
    expect(down.migrations.length).toBeGreaterThanOrEqual(3);
    expect(await appDefinitions(db.pool)).toEqual(definitions);
    expect(await appChecksums(db.pool)).toEqual(afterAutomation);
    // What the automation did stays done (the app's rows are the app's); nothing else changed.
    expect(afterAutomation.new_order).not.toEqual(sums.new_order);
    expect({ ...afterAutomation, new_order: sums.new_order, store: sums.store }).toEqual(sums);
    const left = await db.pool.query<{ name: string }>(
      `select nspname as name from pg_namespace where nspname = 'order_automation'
       union all select tablename from pg_tables where schemaname = 'public' order by 1`,
    );
    expect(left.rows.map((r) => r.name)).toEqual([
      ...['book', 'new_order', 'new_order_detail', 'order_automation_migrations', 'store', 'user', 'user_store'],
    ]);
    expect(shop.buyers.length).toBeGreaterThan(0);
    // And adopting again works, from scratch.
    await migrate(db.url, adoptOptions);
    expect((await db.pool.query('select count(*)::int as n from order_automation.adopted_table')).rows[0].n).toBe(5);
  });

  test('migrate --down straight after adopting leaves the app tables and rows exactly as they were', async () => {
    const { db } = await appDatabase();
    await openOrders(db);
    const definitions = await appDefinitions(db.pool);
    const sums = await appChecksums(db.pool);
    await migrate(db.url, adoptOptions);
    await migrate(db.url, { direction: 'down' });
    expect(await appDefinitions(db.pool)).toEqual(definitions);
    expect(await appChecksums(db.pool)).toEqual(sums);
  });

  test('a shop table the app lacks is created as in a fresh install (no foreign key onto the app tables), timestamp and double precision columns give deadlines, and down drops only that table', async () => {
    const db = await createTestDatabase({ template: null });
    created.push(db);
    await db.pool.query(`
      create table "user" (user_id varchar(64) primary key, balance bigint not null);
      create table user_store (user_id text, store_id text, primary key (user_id, store_id));
      create table store (store_id text, book_id text, stock_level integer, primary key (store_id, book_id));
      create table new_order (order_id text primary key, user_id text, store_id text, state smallint,
                              placed timestamp, sent double precision);
      insert into "user" values ('buyer', 1000), ('seller', 0);
      insert into user_store values ('seller', 'store1');
      insert into store values ('store1', 'book1', 10);
      insert into new_order values ('u', 'buyer', 'store1', 0, '2030-01-01 12:00', null),
                                   ('s', 'buyer', 'store1', 2, null, extract(epoch from timestamptz '2030-01-01 12:00Z'))`);
    const definitions = await appDefinitions(db.pool);
    const sums = await appChecksums(db.pool);
    const client = await db.pool.connect();
    try {
      // A timestamp without time zone is read in the TimeZone of the migrating session.
      await client.query(`set timezone = 'Asia/Tokyo'`);
      await migrate(client, { adopt: true, schedule: false, createdAtColumn: 'placed', shippedAtColumn: 'sent' });
    } finally {
      client.release();
    }
    const deadlines = await db.pool.query<{ order_id: string; pay: string | null; receipt: string | null }>(
      `select order_id, to_char(pay_deadline at time zone 'UTC', 'YYYY-MM-DD HH24:MI') as pay,
              to_char(receipt_deadline at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') as receipt
         from new_order order by order_id`,
    );
    expect(deadlines.rows).toEqual([
      { order_id: 's', pay: null, receipt: '2030-01-01 12:01:00' },
      { order_id: 'u', pay: '2030-01-01 03:10', receipt: null },
    ]);
    const detail = await db.pool.query<{ def: string }>(
      `select pg_get_constraintdef(oid) as def from pg_constraint where conrelid = 'public.new_order_detail'::regclass order by 1`,
    );
    expect(detail.rows.map((r) => r.def)).toEqual([
      'CHECK ((count > 0))',
      'CHECK ((price >= 0))',
      'PRIMARY KEY (order_id, book_id)',
    ]);
    expect(
      (await db.pool.query('select table_name from order_automation.adopted_table order by 1')).rows.map(
        (r) => r.table_name,
      ),
    ).toEqual(['new_order', 'store', 'user', 'user_store']);
    // The 'full' bookkeeping books the order the app places in the new lines table.
    await db.pool.query(`update order_automation.settings set bookkeeping = 'full'`);
    await db.pool.query(`insert into new_order_detail values ('n', 'book1', 3, 50)`);
    await db.pool.query(
      `insert into new_order (order_id, user_id, store_id, state) values ('n', 'buyer', 'store1', 0)`,
    );
    expect((await one<{ stock_level: number }>(db.pool, 'select stock_level from store')).stock_level).toBe(7);
    await db.pool.query(`delete from new_order where order_id = 'n'`);
    await db.pool.query(`update store set stock_level = 10`);

    await migrate(db.url, { direction: 'down', confirm: true });
    expect(await appDefinitions(db.pool)).toEqual(definitions);
    expect(await appChecksums(db.pool)).toEqual(sums);
    expect((await db.pool.query(`select to_regclass('public.new_order_detail') is null as gone`)).rows[0].gone).toBe(
      true,
    );
  });

  test('a database the package cannot work with is refused with every mismatch listed, and nothing changes', async () => {
    const db = await createTestDatabase({ template: null });
    created.push(db);
    await db.pool.query(`
      create table "user" (user_id text primary key, password text not null, balance numeric not null);
      create table user_store (user_id text, store_id text, primary key (user_id, store_id));
      create table store (store_id text, book_id text, price integer, stock_level text, primary key (store_id, book_id));
      create table new_order (order_id text primary key, user_id text, store_id text, state text, create_time integer,
                              held_at integer);
      create view new_order_detail as select 'x'::text as order_id`);
    const definitions = await appDefinitions(db.pool);
    const error = await migrate(db.url, {
      ...adoptOptions,
      createdAtColumn: 'created',
      shippedAtColumn: 'store_id',
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AdoptionMismatchError);
    const message = (error as Error).message;
    expect(message).toMatch(/^order-automation cannot adopt this database, so nothing was changed: /);
    for (const mismatch of [
      'public."user".balance is numeric (needed: integer or bigint)',
      'public.store.stock_level is text (needed: integer or bigint)',
      'public.new_order.state is text (needed: integer or smallint)',
      'public.new_order_detail is a view, not a table',
      'public.new_order.held_at is integer, and the package keeps its own held_at (timestamp with time zone) there',
      '--created-at-column created: public.new_order has no column created',
      '--shipped-at-column store_id: public.new_order.store_id is text, not a time',
    ]) {
      expect(message).toContain(mismatch);
    }
    expect(message.split('; ')).toHaveLength(7);
    expect(message).not.toContain('\n');
    const { rows } = await db.pool.query<{ name: string }>(
      `select tablename as name from pg_tables where schemaname = 'public'
       union all select nspname from pg_namespace where nspname = 'order_automation' order by 1`,
    );
    expect(rows.map((r) => r.name)).toEqual(['new_order', 'store', 'user', 'user_store']);
    expect(await appDefinitions(db.pool)).toEqual(definitions);
  });

  test('a plain migrate is refused, naming the tables and pointing to --adopt, and leaves no table behind', async () => {
    const { db } = await appDatabase();
    const definitions = await appDefinitions(db.pool);
    const error = await migrate(db.url, { schedule: false }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AdoptionRequiredError);
    expect((error as Error).message).toMatch(
      /^public\."user", public\.user_store, public\.store, public\.new_order and public\.new_order_detail already exist and were not created by order-automation/,
    );
    expect((error as Error).message).toContain('--adopt');
    expect(
      (await db.pool.query(`select to_regclass('public.order_automation_migrations') is null as none`)).rows[0].none,
    ).toBe(true);
    expect(await appDefinitions(db.pool)).toEqual(definitions);
  });

  test('the CLI adopts with the flags of that family of apps, and refuses a plain migrate with exit 1 and one paragraph', async () => {
    const { db } = await appDatabase();
    const out: string[] = [];
    const err: string[] = [];
    const io = { stdout: { write: (t: string) => out.push(t) }, stderr: { write: (t: string) => err.push(t) } };
    expect(await main(['migrate', '--no-schedule', '--database-url', db.url], io)).toBe(1);
    expect(err.join('')).toMatch(
      /^order-automation: public\."user", .* already exist .* order-automation migrate --adopt/,
    );
    expect(err.join('').trim().split('\n')).toHaveLength(1);
    expect(
      await main(
        [
          'migrate',
          '--adopt',
          '--created-at-column',
          'create_time',
          '--shipped-at-column',
          'delivery_time',
          '--state-codes',
          'cancelled=-1',
          '--no-schedule',
          '--database-url',
          db.url,
        ],
        io,
      ),
    ).toBe(0);
    expect(out.join('')).toContain('applied 0005_adopt');
    expect(await one(db.pool, 'select bookkeeping, state_cancelled from order_automation.settings')).toEqual({
      bookkeeping: 'automation',
      state_cancelled: -1,
    });
    expect(await main(['migrate', '--bookkeeping', 'some', '--database-url', db.url], io)).toBe(2);
    expect(await main(['migrate', '--state-codes', 'lost=5', '--database-url', db.url], io)).toBe(2);
  });
});

describe('what the adoption checks', () => {
  test("its lists of needed and added columns are a fresh install's new_order, column for column", async () => {
    const db = await createTestDatabase();
    created.push(db);
    const { rows } = await db.pool.query<{ column: string; type: string }>(
      `select a.attname as column, format_type(a.atttypid, null) as type from pg_attribute a
        where a.attrelid = 'public.new_order'::regclass and a.attnum > 0 and not a.attisdropped`,
    );
    const fresh = Object.fromEntries(rows.map((r) => [r.column, r.type]));
    const needed = neededColumns.new_order;
    for (const [column, types] of Object.entries(needed)) expect(types).toContain(fresh[column]);
    expect(Object.fromEntries(Object.entries(fresh).filter(([column]) => !(column in needed)))).toEqual(packageColumns);
  });
});

describe('the app written against the package', () => {
  test.each(['app', 'database'] as const)(
    'new orders written by the app (%s books), lines before the order, get their deadlines; a shipment its receipt deadline',
    async (books) => {
      const { db, shop } = await appDatabase();
      await migrate(db.url, { ...adoptOptions, bookkeeping: books === 'app' ? 'automation' : 'full' });
      await db.pool.query(
        `update order_automation.settings set payment_timeout = '7 minutes', receipt_timeout = '2 days'`,
      );
      const app = new App(db.pool, { books });
      const before = await appConserved(db.pool);
      expect(
        await app.place('n1', shop.buyers[0]!, 'store1', [
          { book: 'book1', count: 2 },
          { book: 'book2', count: 1 },
        ]),
      ).toBe('done');
      const placed = await one<{ late: number; stock: number }>(
        db.pool,
        `select extract(epoch from pay_deadline - created_at - interval '7 minutes')::float as late,
                extract(epoch from now() - created_at)::float as stock from new_order where order_id = 'n1'`,
      );
      expect(placed.late).toBe(0);
      // The books are reserved once: by the app itself, or by the database when the order arrives.
      expect(await appConserved(db.pool)).toEqual(before);
      expect(
        (
          await one<{ stock_level: number }>(
            db.pool,
            `select stock_level from store where store_id = 'store1' and book_id = 'book1'`,
          )
        ).stock_level,
      ).toBe(10_000 - 2);
      expect(await app.pay('n1')).toBe('done');
      expect(await app.ship('n1')).toBe('done');
      const shipped = await one<{ late: number }>(
        db.pool,
        `select extract(epoch from receipt_deadline - shipped_at - interval '2 days')::float as late from new_order where order_id = 'n1'`,
      );
      expect(shipped.late).toBe(0);
      expect(await app.receive('n1')).toBe('done');
      expect(await appConserved(db.pool)).toEqual(before);
      expect(
        (await one<{ balance: number }>(db.pool, `select balance from "user" where user_id = 'seller1'`)).balance,
      ).toBe(2 * 101 + 102);
      expect((await readOrderEvents(db.pool, { orderId: 'n1' })).map((e) => [e.to, e.cause])).toEqual([
        ['unpaid', 'sql'],
        ['paid', 'sql'],
        ['shipped', 'sql'],
        ['received', 'sql'],
      ]);
      // The app's own cancel (-1), of a paid order: refunded and restocked once, by whoever books.
      expect(await app.place('n2', shop.buyers[1]!, 'store2', [{ book: 'book3', count: 5 }])).toBe('done');
      expect(await app.pay('n2')).toBe('done');
      expect(await app.cancel('n2')).toBe('done');
      expect(await appConserved(db.pool)).toEqual(before);
      expect(
        (await one<{ balance: number }>(db.pool, `select balance from "user" where user_id = $1`, [shop.buyers[1]]))
          .balance,
      ).toBe(1_000_000);
    },
  );
});
