// Installing as a user meets it: migrate says only what is worth saying (node-pg-migrate's own lines
// with --verbose), a failure is one paragraph without the SQL, --down asks before it drops rows, and
// a role that may not install is told so before anything is applied, with the GRANT to run.
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, test } from 'vitest';
import { migrate, OrderAutomationError, placeOrder } from '../src/index.js';
import { cliInProcess } from './cli-in-process.js';
import { admin, createTestDatabase, seedBookstore, type TestDatabase } from './helpers.js';

const created: TestDatabase[] = [];
const roles: string[] = [];
afterAll(async () => {
  await Promise.all(created.map((db) => db.drop()));
  await admin(async (server) => {
    for (const role of roles)
      await server.query(`drop owned by ${role} cascade; drop role if exists ${role}`).catch(() => undefined);
  });
});

async function emptyDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase({ template: null });
  created.push(db);
  return db;
}

async function packageParts(db: TestDatabase): Promise<{ schema: boolean; migrationsTable: boolean; tables: number }> {
  const { rows } = await db.pool.query(`
    select exists (select from pg_namespace where nspname = 'order_automation') as schema,
           to_regclass('public.order_automation_migrations') is not null as "migrationsTable",
           (select count(*)::int from pg_tables where schemaname = 'public') as tables`);
  return rows[0];
}

describe('what migrate says', () => {
  test("quiet by default: node-pg-migrate's own lines only with verbose", async () => {
    const quiet = await emptyDatabase();
    const lines: string[] = [];
    await migrate(quiet.url, { schedule: false, log: (line) => lines.push(line) });
    expect(lines.filter((l) => /MIGRATION|Migrating files|^> /.test(l))).toEqual([]);

    const verbose = await emptyDatabase();
    const told: string[] = [];
    await migrate(verbose.url, { schedule: false, log: (line) => told.push(line), verbose: true });
    expect(told).toContain('> Migrating files:');
    expect(told).toContain('### MIGRATION 0001_core (UP) ###');
  });

  test('a failed migrate is one paragraph, never the SQL; --verbose shows the SQL that failed', async () => {
    const db = await emptyDatabase();
    // Something in the way of the first migration: it fails half-way through its SQL.
    await db.pool.query('create schema order_automation');
    const plain = await cliInProcess(['migrate', '--no-schedule'], db.url);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toBe('order-automation: schema "order_automation" already exists.\n');
    const verbose = await cliInProcess(['migrate', '--no-schedule', '--verbose'], db.url);
    expect(verbose.code).toBe(1);
    expect(verbose.stderr).toMatch(/Error executing:\n/);
    expect(verbose.stderr).toMatch(/create table public\."user"/);
    expect(verbose.stderr.trim().split('\n').at(-1)).toBe(
      'order-automation: schema "order_automation" already exists.',
    );
  });
});

describe('migrate --down', () => {
  test('refuses to drop tables holding rows unless confirmed, and then changes nothing', async () => {
    const db = await emptyDatabase();
    await migrate(db.url, { schedule: false });
    await seedBookstore(db.pool);
    await placeOrder(db.pool, {
      orderId: 'kept',
      userId: 'buyer1',
      storeId: 'store1',
      items: [{ bookId: 'book1', count: 1, price: 5 }],
    });
    const before = await packageParts(db);

    const refused = await migrate(db.url, { direction: 'down' }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OrderAutomationError);
    expect((refused as Error).message).toBe(
      'migrate --down would drop tables that hold rows: public.new_order_detail, public.new_order, public.store, public.user_store, public."user", order_automation.order_event. ' +
        "Nothing was changed. To drop them with their rows, confirm: order-automation migrate --down --yes (in code: migrate(db, { direction: 'down', confirm: true })).",
    );
    const cli = await cliInProcess(['migrate', '--down'], db.url);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(
      /^order-automation: migrate --down would drop tables that hold rows: .* --down --yes .*\n$/,
    );
    expect(await packageParts(db)).toEqual(before);
    expect((await db.pool.query(`select from new_order where order_id = 'kept'`)).rowCount).toBe(1);

    // Reverting only the last release drops none of those tables: no confirmation needed.
    expect((await migrate(db.url, { direction: 'down', count: 1 })).migrations).toHaveLength(1);
    const confirmed = await cliInProcess(['migrate', '--down', '--yes'], db.url);
    expect(confirmed.code).toBe(0);
    expect(await packageParts(db)).toEqual({ schema: false, migrationsTable: true, tables: 1 });
  });

  test('on an install holding no rows it needs no confirmation', async () => {
    const db = await emptyDatabase();
    await migrate(db.url, { schedule: false });
    expect((await migrate(db.url, { direction: 'down' })).migrations.length).toBeGreaterThan(0);
    expect((await packageParts(db)).schema).toBe(false);
  });
});

describe('a role that may not install is told before anything is applied', () => {
  test('with CREATE on the database only, PostgreSQL 15 refuses tables in schema public: one paragraph with the GRANT', async () => {
    const db = await emptyDatabase();
    const role = `installer_${randomBytes(4).toString('hex')}`;
    roles.push(role);
    // What the README lists for an install without a schedule, but CREATE on schema public.
    await admin((server) =>
      server.query(`create role ${role} login;
                    grant create on database ${db.name} to ${role};
                    grant pg_read_all_settings to ${role};
                    grant order_automation_app to ${role} with admin option`),
    );
    const url = new URL(db.url);
    url.username = role;
    const out = await cliInProcess(['migrate', '--no-schedule'], url.toString());
    expect(out.code).toBe(1);
    expect(out.stderr).toBe(
      `order-automation: order-automation cannot be installed by role "${role}" into database "${db.name}": ` +
        `role "${role}" may not create tables in schema public of database "${db.name}" (since PostgreSQL 15 only the schema's owner may, unless granted), ` +
        `and the bookstore's tables and the migrations table public.order_automation_migrations live there: in database "${db.name}", as its owner or a superuser, ` +
        `run GRANT CREATE ON SCHEMA public TO ${role}; Nothing was applied; run it and migrate again.\n`,
    );
    expect(await packageParts(db)).toEqual({ schema: false, migrationsTable: false, tables: 0 });

    await db.pool.query(`grant create on schema public to ${role}`);
    const installed = await cliInProcess(['migrate', '--no-schedule'], url.toString());
    expect(installed).toMatchObject({ code: 0, stderr: '' });
    expect(await packageParts(db)).toMatchObject({ schema: true, migrationsTable: true });
  });
});
