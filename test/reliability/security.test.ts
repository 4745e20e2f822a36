// "Nothing the package installs can be hijacked by objects another role creates": a role
// that may only create objects in schema public plants functions, operators, aggregates, views and a
// migrations table shadowing what the package uses; the owner (and pg_cron, a plain CALL with the
// default search_path) then runs the package, and the hijacker's objects must never run.
import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  cancelExpiredOrders,
  cancelOrder,
  clearStoreSettings,
  confirmReceipt,
  confirmShippedOrders,
  extendReceipt,
  getSettings,
  getStatus,
  holdOrder,
  migrate,
  payOrder,
  paymentStarted,
  placeOrder,
  purgeCancelledOrders,
  purgeHistory,
  readOrderEvents,
  getOrder,
  doctor,
  releaseOrder,
  setSchedule,
  setStoreSettings,
  shipOrder,
  updateSettings,
} from '../../src/index.js';
import { admin, createTestDatabase, one, seedBookstore, type TestDatabase } from '../helpers.js';
import { applyTestSql, expectInvariants, openFigures, reliabilityDatabase, sqlstateOf } from './support.js';
import { newClient } from '../setup/connections.js';

const tally = openFigures(import.meta.url);

/** The routines the package's SQL creates in its schema, by name. */
function routinesInSql(): string[] {
  const dir = new URL('../../sql/', import.meta.url);
  const names = readdirSync(dir)
    .filter((file) => file.endsWith('.sql'))
    .flatMap((file) => [
      ...readFileSync(new URL(file, dir), 'utf8').matchAll(
        /^create (?:or replace )?(?:function|procedure) (order_automation\.\w+)/gim,
      ),
    ])
    .map((match) => match[1]!.toLowerCase());
  return [...new Set(names)].sort();
}

// ── the traps ───────────────────────────────────────────────────────────────

/** Functions the package (or SQL in general) calls, each with an overload a careless lookup would pick. */
const functionTraps: [signature: string, returns: string, real: string][] = [
  ['now()', 'timestamptz', 'pg_catalog.now()'],
  ['clock_timestamp()', 'timestamptz', 'pg_catalog.clock_timestamp()'],
  ['current_setting(text)', 'text', 'pg_catalog.current_setting($1)'],
  ['current_setting(text, boolean)', 'text', 'pg_catalog.current_setting($1, $2)'],
  ['set_config(text, text, boolean)', 'text', 'pg_catalog.set_config($1, $2, $3)'],
  ['pg_notify(text, text)', 'void', 'pg_catalog.pg_notify($1, $2)'],
  ['current_database()', 'name', 'pg_catalog.current_database()'],
  ['format(text)', 'text', 'pg_catalog.format($1)'],
  ['format(text, text)', 'text', 'pg_catalog.format($1, $2)'],
  ['format(text, text, text)', 'text', 'pg_catalog.format($1, $2, $3)'],
  ['format(text, text, text, text)', 'text', 'pg_catalog.format($1, $2, $3, $4)'],
  ['format(text, integer)', 'text', 'pg_catalog.format($1, $2)'],
  ['format(text, bigint)', 'text', 'pg_catalog.format($1, $2)'],
  ['format(text, text, smallint, smallint)', 'text', 'pg_catalog.format($1, $2, $3, $4)'],
  ['cardinality(text[])', 'integer', 'pg_catalog.cardinality($1)'],
  ['cardinality(anyarray)', 'integer', 'pg_catalog.cardinality($1)'],
  ['array_length(text[], integer)', 'integer', 'pg_catalog.array_length($1, $2)'],
  ['unnest(text[])', 'setof text', 'select pg_catalog.unnest($1)'],
  ['unnest(integer[])', 'setof integer', 'select pg_catalog.unnest($1)'],
  ['jsonb_typeof(jsonb)', 'text', 'pg_catalog.jsonb_typeof($1)'],
  ['jsonb_array_length(jsonb)', 'integer', 'pg_catalog.jsonb_array_length($1)'],
  ['string_to_array(text, text)', 'text[]', 'pg_catalog.string_to_array($1, $2)'],
  ['replace(text, text, text)', 'text', 'pg_catalog.replace($1, $2, $3)'],
  ['btrim(text)', 'text', 'pg_catalog.btrim($1)'],
  ['"coalesce"(text, text)', 'text', 'coalesce($1, $2)'],
  ['"nullif"(text, text)', 'text', 'nullif($1, $2)'],
  ['to_regprocedure(text)', 'regprocedure', 'pg_catalog.to_regprocedure($1)'],
  ['pg_advisory_lock(bigint)', 'void', 'pg_catalog.pg_advisory_lock($1)'],
  ['pg_try_advisory_lock(bigint)', 'boolean', 'pg_catalog.pg_try_advisory_lock($1)'],
  ['pg_advisory_unlock(bigint)', 'boolean', 'pg_catalog.pg_advisory_unlock($1)'],
  ['pg_backend_pid()', 'integer', 'pg_catalog.pg_backend_pid()'],
  ['lower(text)', 'text', 'pg_catalog.lower($1)'],
];

/** Operators, each for the exact types the package's expressions use (and a few better matches). */
const operatorTraps: [op: string, left: string | null, right: string, returns: string][] = [
  ['=', 'text', 'text', 'boolean'],
  ['<>', 'text', 'text', 'boolean'],
  ['=', 'bigint', 'bigint', 'boolean'],
  ['=', 'smallint', 'integer', 'boolean'],
  ['<>', 'smallint', 'integer', 'boolean'],
  ['=', 'smallint', 'smallint', 'boolean'],
  ['=', 'integer', 'integer', 'boolean'],
  ['<', 'integer', 'integer', 'boolean'],
  ['>', 'integer', 'integer', 'boolean'],
  ['<', 'bigint', 'integer', 'boolean'],
  ['>=', 'bigint', 'bigint', 'boolean'],
  ['>', 'bigint', 'integer', 'boolean'],
  ['+', 'bigint', 'integer', 'bigint'],
  ['+', 'bigint', 'bigint', 'bigint'],
  ['-', 'bigint', 'bigint', 'bigint'],
  ['*', 'bigint', 'bigint', 'bigint'],
  ['+', 'integer', 'integer', 'integer'],
  ['-', 'timestamptz', 'timestamptz', 'interval'],
  ['+', 'timestamptz', 'interval', 'timestamptz'],
  ['-', 'timestamptz', 'interval', 'timestamptz'],
  ['<=', 'timestamptz', 'timestamptz', 'boolean'],
  ['>', 'timestamptz', 'timestamptz', 'boolean'],
  ['<', 'timestamptz', 'timestamptz', 'boolean'],
  ['>=', 'interval', 'interval', 'boolean'],
  ['>', 'interval', 'interval', 'boolean'],
  ['=', 'interval', 'interval', 'boolean'],
  ['<=', 'interval', 'interval', 'boolean'],
  ['||', 'text[]', 'text[]', 'text[]'],
  ['||', 'text', 'text', 'text'],
  ['||', 'text[]', 'text', 'text[]'],
  ['?', 'jsonb', 'text', 'boolean'],
  ['->>', 'jsonb', 'text', 'text'],
  ['-', null, 'integer', 'integer'],
  ['-', null, 'bigint', 'bigint'],
];

/** Names of the package's own tables: shadowed by views in public and temp objects in the caller's session. */
const packageTables = ['settings', 'store_settings', 'job', 'run', 'order_event', 'order_failure'];
const bookstoreTables = ['user', 'user_store', 'store', 'new_order', 'new_order_detail'];

/** What the hijacker (a role with CREATE on public and nothing else) plants, as that role. */
function trapsSql(): string {
  const lines: string[] = [
    `create table public.hijack_log (id serial primary key, what text not null, by_role text not null default current_user,
       at timestamptz not null default clock_timestamp())`,
    'grant insert, select on public.hijack_log to public',
    'grant usage on sequence public.hijack_log_id_seq to public',
    // Logs and carries on (a quiet hijack is the dangerous one): the log is the only evidence.
    `create function public.hijacked(what text) returns boolean language sql set search_path = pg_catalog
       as $$ insert into public.hijack_log (what) values ($1); select true $$`,
  ];
  functionTraps.forEach(([signature, returns, real], i) => {
    const setof = returns.startsWith('setof');
    const body = setof
      ? `select public.hijacked('${signature.replace(/'/g, "''")}'); ${real}`
      : `select public.hijacked('${signature.replace(/'/g, "''")}'); select ${real}`;
    lines.push(
      `create function public.${signature} returns ${returns} language sql set search_path = pg_catalog as $trap${i}$ ${body} $trap${i}$`,
    );
  });
  operatorTraps.forEach(([op, left, right, returns], i) => {
    const args = left === null ? `${right}` : `${left}, ${right}`;
    const real = left === null ? `operator(pg_catalog.${op}) $1` : `$1 operator(pg_catalog.${op}) $2`;
    const what = `operator ${op}(${left ?? 'none'}, ${right})`;
    lines.push(`create function public.trap_operator_${i}(${args}) returns ${returns} language sql set search_path = pg_catalog
      as $trap$ select public.hijacked('${what}'); select ${real} $trap$`);
    lines.push(
      `create operator public.${op} (${left === null ? '' : `leftarg = ${left}, `}rightarg = ${right}, function = public.trap_operator_${i})`,
    );
  });
  // A better match than pg_catalog's polymorphic array_agg(anynonarray) for text.
  lines.push(`create function public.trap_append(text[], text) returns text[] language sql set search_path = pg_catalog
    as $$ select public.hijacked('aggregate array_agg(text)'); select $1 operator(pg_catalog.||) $2 $$`);
  lines.push('create aggregate public.array_agg(text) (sfunc = public.trap_append, stype = text[])');
  // Types named like the ones the package casts to.
  lines.push(`create domain public.jsonb as pg_catalog.jsonb check (public.hijacked('domain jsonb'))`);
  lines.push(`create domain public.text as pg_catalog.text check (public.hijacked('domain text'))`);
  // The package's own tables, shadowed in public: reading or writing one is logged.
  for (const name of packageTables)
    lines.push(`create view public.${name} as select public.hijacked('view public.${name}') as trap`);
  return lines.join(';\n');
}

/** Temp objects of the caller's own session, named like the package's and the bookstore's tables. */
function tempTrapsSql(): string {
  return [...packageTables, ...bookstoreTables]
    .map(
      (name) => `create temp view ${pg.escapeIdentifier(name)} as select public.hijacked('temp view ${name}') as trap`,
    )
    .join(';\n');
}

async function plantTraps(db: TestDatabase, role: string): Promise<void> {
  await db.pool.query(`grant create on schema public to ${role}`);
  const client = await db.pool.connect();
  try {
    await client.query(`set role ${role}`);
    await client.query(trapsSql());
  } finally {
    await client.query('reset role').catch(() => undefined);
    client.release();
  }
}

async function hijackLog(db: TestDatabase): Promise<{ what: string; by_role: string }[]> {
  return (
    await db.pool.query<{ what: string; by_role: string }>('select what, by_role from public.hijack_log order by id')
  ).rows;
}

const roles: string[] = [];
const databases: TestDatabase[] = [];

async function hijacker(db: TestDatabase): Promise<string> {
  const role = `hijacker_${db.name}`;
  await admin((c) => c.query(`create role ${role} nologin`));
  roles.push(role);
  return role;
}

afterAll(async () => {
  for (const db of databases) await db.drop();
  for (const role of roles) await admin((c) => c.query(`drop role if exists ${role}`)).catch(() => undefined);
});

// ── the tests ───────────────────────────────────────────────────────────────

describe('a role that may create objects in public cannot hijack the package', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await reliabilityDatabase();
    databases.push(db);
    await seedBookstore(db.pool, { buyers: 3, stores: 2, books: 3, balance: 1_000_000, stock: 1000 });
    await plantTraps(db, await hijacker(db));
    tally.faultsInjected += functionTraps.length + operatorTraps.length + 3 + packageTables.length;
  });

  test('every function of the package pins its search_path; only the procedures that commit do not, and they are the ones tried below', async () => {
    const { rows } = await db.pool.query<{
      name: string;
      kind: string;
      config: string[] | null;
      definer: boolean;
      commits: boolean;
    }>(`
      select p.oid::regprocedure::text as name, p.prokind as kind, p.proconfig as config, p.prosecdef as definer,
             p.prosrc ~* '\\mcommit\\s*;' or p.prosrc ~* '\\mcall\\s+order_automation\\.' as commits
        from pg_proc p where p.pronamespace = 'order_automation'::regnamespace order by 1`);
    // The query sees every routine of the package, and nothing else.
    expect([...new Set(rows.map((r) => r.name.replace(/\(.*/, '')))].sort()).toEqual(routinesInSql());
    const pinned = (r: (typeof rows)[number]) => (r.config ?? []).includes('search_path=pg_catalog, pg_temp');
    const unpinned = rows.filter((r) => !pinned(r) && !(r.kind === 'p' && r.commits && !r.definer));
    tally.expectNone(
      'every function pins search_path = pg_catalog, pg_temp',
      unpinned.length,
      unpinned.map((r) => `${r.name} ${JSON.stringify(r.config)}`),
    );
    const committing = rows.filter((r) => !pinned(r)).map((r) => r.name.replace(/\(.*/, ''));
    expect(committing.sort()).toEqual(
      expect.arrayContaining(['order_automation.cancel_expired_orders', 'order_automation.confirm_shipped_orders']),
    );
    for (const name of committing)
      expect(name, 'a committing procedure the traps below do not call').toMatch(
        /cancel_expired_orders|confirm_shipped_orders|purge_cancelled_orders|run_due_orders/,
      );
  });

  test('the owner runs the whole lifecycle, the automation, the settings and the status with the default search_path: no planted object ever runs', async () => {
    const owner = newClient({ connectionString: db.url });
    await owner.connect();
    try {
      // The caller's own temp objects, named like the package's tables, come first in its search path.
      await owner.query(tempTrapsSql());
      const later = new Date(Date.now() + 3_600_000);
      for (let i = 1; i <= 4; i++) {
        await placeOrder(owner, {
          orderId: `h${i}`,
          userId: 'buyer1',
          storeId: 'store1',
          items: [
            { bookId: 'book1', count: 1, price: 100 },
            { bookId: 'book2', count: 2, price: 50 },
          ],
        });
      }
      await paymentStarted(owner, 'h1');
      await payOrder(owner, 'h1');
      await shipOrder(owner, 'h1');
      await extendReceipt(owner, 'h1', '1 minute');
      await holdOrder(owner, 'h2', 'a dispute');
      await releaseOrder(owner, 'h2');
      await payOrder(owner, 'h3');
      await cancelOrder(owner, 'h3');
      await owner.query('update public.new_order set state = 1 where order_id = $1', ['h4']);
      await shipOrder(owner, 'h4');
      await confirmReceipt(owner, 'h4');
      expect((await cancelExpiredOrders(owner, { asOf: later, batchSize: 1 })).cancelled).toBe(1);
      expect((await confirmShippedOrders(owner, { asOf: new Date(Date.now() + 86_400_000) })).confirmed).toBe(1);
      // pg_cron: each job's fixed command, on a session with the default search_path.
      for (const { command } of (
        await owner.query<{ command: string }>(
          'select order_automation.job_command(job) as command from order_automation.job order by job',
        )
      ).rows) {
        await owner.query(command);
      }
      await updateSettings(owner, { batchSize: 7, purgeCancelledAfter: '0 seconds' });
      await purgeCancelledOrders(owner, { asOf: later });
      await updateSettings(owner, { batchSize: 1000, purgeCancelledAfter: null });
      await purgeHistory(owner);
      await getSettings(owner);
      await setStoreSettings(owner, 'store2', { paymentTimeout: '20 minutes' });
      await clearStoreSettings(owner, 'store2');
      await setSchedule(owner, 'cancel_expired_orders', { schedule: '*/5 * * * *' });
      await setSchedule(owner, 'cancel_expired_orders', { schedule: '* * * * *' });
      const status = await getStatus(owner);
      const { rows: installed } = await owner.query<{ job: string }>('select job from order_automation.job');
      expect(status.jobs.map((j) => j.job).sort()).toEqual(installed.map((j) => j.job).sort());
      // h1's whole life, each step recorded once: the automation confirmed it after the extension.
      expect((await readOrderEvents(owner, { orderId: 'h1' })).map((e) => e.cause)).toEqual([
        'place_order',
        'payment_started',
        'pay_order',
        'ship_order',
        'receipt_extended',
        'receipt_timeout',
      ]);
      expect(await getOrder(owner, 'h1')).toMatchObject({ state: 'received', total: 200, lines: [{}, {}] });
      expect((await doctor(db.url)).database).toBe(db.name);
      await migrate(owner, { schedule: false }); // already installed: node-pg-migrate's own queries only
    } finally {
      await owner.end();
    }
    const log = await hijackLog(db);
    tally.expectNone('no planted object runs for the owner', log.length, log.slice(0, 10));
    await expectInvariants(db.pool, tally);
  });

  test("the procedures that commit resolve nothing through the caller's search_path, even one that puts the planted schema before pg_catalog", async () => {
    await db.pool.query('truncate public.hijack_log');
    const breaches: string[] = [];
    for (const path of ['public', '"$user", public', 'public, pg_catalog', 'public, pg_temp, pg_catalog']) {
      const caller = newClient({ connectionString: db.url });
      await caller.connect();
      try {
        // The calls themselves hold no operator, function or type name that could resolve to a trap.
        const tomorrow = new Date(Date.now() + 86_400_000).toISOString();
        await caller.query(
          `select order_automation.place_order($1, 'buyer2', 'store2', '[{"book_id": "book3", "count": 1, "price": 10}]')`,
          [`p${breaches.length}_${path.length}_${Math.random()}`],
        );
        await caller.query(`set search_path = ${path}`);
        for (const call of [
          `call order_automation.cancel_expired_orders(as_of => '${tomorrow}', batch_size => 1)`,
          `call order_automation.confirm_shipped_orders(as_of => '${tomorrow}')`,
          `call order_automation.purge_cancelled_orders(as_of => '${tomorrow}')`,
          'call order_automation.purge_history()',
        ]) {
          tally.inputsTried++;
          await caller
            .query(call)
            .catch((error: unknown) => breaches.push(`${path}: ${call}: ${(error as Error).message}`));
        }
      } finally {
        await caller.end();
      }
      const log = await hijackLog(db);
      if (log.length > 0)
        breaches.push(
          `search_path ${path}: ran ${[...new Set(log.map((l) => `${l.what} as ${l.by_role}`))].join(', ')}`,
        );
      await db.pool.query('truncate public.hijack_log');
    }
    tally.expectNone('the committing procedures call only pg_catalog and their own schema', breaches.length, breaches);
  });

  test('hostile strings given to the TypeScript module are data, never SQL', async () => {
    const hostile = [
      `o'); delete from public.new_order; --`,
      `"; drop table public.store; --`,
      `$1`,
      `%s`,
      `\\`,
      `💥`,
      `x' or '1'='1`,
    ];
    const before = Number((await one<{ n: string }>(db.pool, 'select count(*) n from public.new_order')).n);
    for (const id of hostile) {
      tally.inputsTried++;
      const placed = await placeOrder(db.pool, {
        orderId: id,
        userId: 'buyer3',
        storeId: 'store1',
        items: [{ bookId: 'book3', count: 1, price: 1 }],
      });
      expect(placed.orderId).toBe(id);
      await holdOrder(db.pool, id, id);
      expect((await readOrderEvents(db.pool, { orderId: id })).map((e) => e.cause)).toEqual(['place_order', 'hold']);
      await releaseOrder(db.pool, id);
      await cancelOrder(db.pool, id);
      expect(
        sqlstateOf(
          await placeOrder(db.pool, {
            orderId: `${id}2`,
            userId: id,
            storeId: 'store1',
            items: [{ bookId: 'book3', count: 1, price: 1 }],
          }).catch((e: unknown) => e),
        ),
      ).toBe('23503');
      const storeError = await setStoreSettings(db.pool, id, { paymentTimeout: '1 hour' }).catch((e: unknown) => e);
      expect(storeError).toBeInstanceOf(Error);
    }
    expect(Number((await one<{ n: string }>(db.pool, 'select count(*) n from public.new_order')).n)).toBe(
      before + hostile.length,
    );
    expect(Number((await one<{ n: string }>(db.pool, 'select count(*) n from public.store')).n)).toBe(6);
    expect(await hijackLog(db)).toEqual([]);
  });
});

describe('a first install into a database where another role could create objects in public', () => {
  test('a migrations table (with a trigger) and traps planted in public before the first install never run as the installer', async () => {
    const db = await createTestDatabase({ template: null });
    databases.push(db);
    const role = await hijacker(db);
    await plantTraps(db, role);
    const client = await db.pool.connect();
    try {
      await client.query(`set role ${role}`);
      // What node-pg-migrate would create, created first, with a trigger that runs as whoever writes to it.
      await client.query(`
        create table public.order_automation_migrations (id serial primary key, name varchar(255) not null, run_on timestamp not null);
        create function public.trap_migration() returns trigger language plpgsql set search_path = pg_catalog
          as $$ begin perform public.hijacked('migrations table trigger: ' || new.name); return new; end $$;
        create trigger trap after insert on public.order_automation_migrations for each row execute function public.trap_migration();`);
    } finally {
      await client.query('reset role').catch(() => undefined);
      client.release();
    }
    tally.faultsInjected += 2;
    const refused = await migrate(db.url, { schedule: false }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    const log = await hijackLog(db);
    tally.expectNone('nothing planted runs as the installer during a first install', log.length, log.slice(0, 10));
    if (refused) {
      // Refusing to install next to a planted migrations table is fine, if it says why.
      expect(refused.message).toMatch(/order_automation_migrations/);
    } else {
      await applyTestSql(db.pool);
      await seedBookstore(db.pool, { buyers: 1, stores: 1, books: 1 });
      await placeOrder(db.pool, {
        orderId: 'first',
        userId: 'buyer1',
        storeId: 'store1',
        items: [{ bookId: 'book1', count: 1, price: 5 }],
      });
      expect((await cancelExpiredOrders(db.pool, { asOf: new Date(Date.now() + 3_600_000) })).cancelled).toBe(1);
      expect(await hijackLog(db)).toEqual([]);
    }
  });
});
