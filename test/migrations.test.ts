// Installing: migrations run twice or at once do no harm, down removes what up added, a migrated
// database holds exactly the definitions of sql/, and every routine passes plpgsql_check.
import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, describe, expect, inject, test } from 'vitest';
import { AdoptionRequiredError, migrate, migrationsDir } from '../src/index.js';
import { createTestDatabase, type TestDatabase } from './helpers.js';

const created: TestDatabase[] = [];
/** Every migration of the package, in order: what an install from zero applies. */
const allMigrations = readdirSync(migrationsDir)
  .filter((f) => f.endsWith('.ts'))
  .sort()
  .map((f) => f.replace(/\.ts$/, ''));
async function emptyDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase({ template: null });
  created.push(db);
  return db;
}
afterAll(async () => {
  await Promise.all(created.map((db) => db.drop()));
});

/** Everything the package defines, as text, in a stable order: what must be equal between installs. */
async function catalog(db: pg.Pool): Promise<string[]> {
  const { rows } = await db.query<{ line: string }>(`
    with ns as (select oid from pg_namespace where nspname in ('public', 'order_automation'))
    select line from (
      select 'function ' || p.oid::regprocedure || E'\n' || pg_get_functiondef(p.oid) || coalesce(obj_description(p.oid, 'pg_proc'), '') || ' acl ' || coalesce(p.proacl::text, '') as line
        from pg_proc p where p.pronamespace in (select oid from ns)
      union all
      select 'trigger ' || pg_get_triggerdef(t.oid) from pg_trigger t join pg_class c on c.oid = t.tgrelid
       where not t.tgisinternal and c.relnamespace in (select oid from ns)
      union all
      select 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
             || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' ' || coalesce(col_description(c.oid, a.attnum), '')
        from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
       where c.relnamespace in (select oid from ns) and c.relkind = 'r' and c.relname <> 'order_automation_migrations'
      union all
      select 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
        from pg_constraint where connamespace in (select oid from ns) and conrelid::regclass::text <> 'order_automation_migrations'
      union all
      select 'index ' || pg_get_indexdef(i.indexrelid) from pg_index i join pg_class c on c.oid = i.indexrelid
       where c.relnamespace in (select oid from ns) and c.relname not like 'order_automation_migrations%'
      union all
      select 'comment ' || c.relname || ' ' || obj_description(c.oid, 'pg_class') from pg_class c
       where c.relnamespace in (select oid from ns) and obj_description(c.oid, 'pg_class') is not null
      union all
      select 'acl ' || c.relname || ' ' || c.relacl::text from pg_class c
       where c.relnamespace in (select oid from ns) and c.relacl is not null and c.relname <> 'order_automation_migrations'
      union all
      select 'settings ' || to_jsonb(s)::text from order_automation.settings s
      union all
      select 'job ' || to_jsonb(j)::text from order_automation.job j
    ) x order by line`);
  return rows.map((r) => r.line);
}

async function hasPackage(db: pg.Pool): Promise<{ schema: boolean; tables: number }> {
  const { rows } = await db.query<{ schema: boolean; tables: string }>(`
    select exists (select from pg_namespace where nspname = 'order_automation') as schema,
           (select count(*) from pg_tables where schemaname = 'public' and tablename in ('user', 'user_store', 'store', 'new_order', 'new_order_detail')) as tables`);
  return { schema: rows[0]!.schema, tables: Number(rows[0]!.tables) };
}

describe('migrations', () => {
  test('migrating an empty database installs everything; migrating again changes nothing', async () => {
    const db = await emptyDatabase();
    expect((await migrate(db.url, { schedule: false })).migrations).toEqual(allMigrations);
    const installed = await catalog(db.pool);
    expect(installed.filter((l) => l.startsWith('function ')).length).toBeGreaterThan(20);
    expect((await migrate(db.url, { schedule: false })).migrations).toEqual([]);
    expect(await catalog(db.pool)).toEqual(installed);
  });

  test('down removes everything up added, and up installs it again the same', async () => {
    const db = await emptyDatabase();
    await migrate(db.url, { schedule: false });
    const installed = await catalog(db.pool);
    expect(await hasPackage(db.pool)).toEqual({ schema: true, tables: 5 });
    expect((await migrate(db.url, { direction: 'down' })).migrations).toEqual([...allMigrations].reverse());
    expect(await hasPackage(db.pool)).toEqual({ schema: false, tables: 0 });
    await migrate(db.url, { schedule: false });
    expect(await catalog(db.pool)).toEqual(installed);
  });

  test('reverting the last migration restores the previous release, and applying it again the same install', async () => {
    const db = await emptyDatabase();
    const previous = await emptyDatabase();
    await migrate(previous.url, { schedule: false, count: allMigrations.length - 1 });
    await migrate(db.url, { schedule: false });
    const installed = await catalog(db.pool);
    expect((await migrate(db.url, { direction: 'down', count: 1 })).migrations).toEqual([allMigrations.at(-1)]);
    // Privileges of the first release differ by design (PUBLIC may execute): compare definitions only.
    const definitions = (lines: string[]) =>
      lines.map((l) => l.replace(/ acl (\{.*\})?$/, '')).filter((l) => !l.startsWith('acl '));
    expect(definitions(await catalog(db.pool))).toEqual(definitions(await catalog(previous.pool)));
    await migrate(db.url, { schedule: false });
    expect(await catalog(db.pool)).toEqual(installed);
  });

  test('two migrations started at once install once and both succeed', async () => {
    const db = await emptyDatabase();
    const results = await Promise.all([migrate(db.url, { schedule: false }), migrate(db.url, { schedule: false })]);
    expect(results.map((r) => r.migrations).flat()).toEqual(allMigrations);
    expect(await hasPackage(db.pool)).toEqual({ schema: true, tables: 5 });
  });

  test('migrating from zero yields exactly the definitions in sql/', async () => {
    const migrated = await emptyDatabase();
    await migrate(migrated.url, { schedule: false });
    const fresh = await emptyDatabase();
    const dir = new URL('../sql/', import.meta.url);
    for (const file of readdirSync(dir)
      .filter((f) => f.endsWith('.sql'))
      .sort()) {
      await fresh.pool.query(readFileSync(new URL(file, dir), 'utf8'));
    }
    const [want, got] = [await catalog(fresh.pool), await catalog(migrated.pool)];
    // Name what differs, rather than two lists of 180 definitions.
    expect(got.filter((line) => !want.includes(line))).toEqual([]);
    expect(want.filter((line) => !got.includes(line))).toEqual([]);
    expect(got).toEqual(want);
  });

  test('a failing migration leaves nothing half-applied', async () => {
    const db = await emptyDatabase();
    // Something of the app's already holds a name the package needs for an index: the install must fail whole.
    await db.pool.query('create table public.new_order_pay_deadline_due (x int)');
    await expect(migrate(db.url, { schedule: false })).rejects.toThrow(
      /relation "new_order_pay_deadline_due" already exists/,
    );
    const { rows } = await db.pool.query(
      `select count(*)::int n from pg_tables where schemaname = 'public' and tablename <> 'order_automation_migrations'`,
    );
    expect(rows[0].n).toBe(1);
    expect((await hasPackage(db.pool)).schema).toBe(false);
  });

  test('migrating onto shop tables an app created is refused, naming them and pointing to --adopt, and leaves no table behind', async () => {
    const db = await emptyDatabase();
    await db.pool.query('create table public.store (x int); create table public."user" (user_id text primary key)');
    const error = await migrate(db.url, { schedule: false }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AdoptionRequiredError);
    expect((error as Error).message).toMatch(/^public\."user" and public\.store already exist and were not created/);
    expect((error as Error).message).toContain('order-automation migrate --adopt');
    const { rows } = await db.pool.query<{ name: string }>(
      `select tablename as name from pg_tables where schemaname = 'public' order by 1`,
    );
    expect(rows.map((r) => r.name)).toEqual(['store', 'user']);
    expect((await hasPackage(db.pool)).schema).toBe(false);
  });
});

describe('static checks', () => {
  test('every PL/pgSQL routine passes plpgsql_check without errors or warnings', async () => {
    const db = await createTestDatabase();
    created.push(db);
    await db.pool.query('create extension if not exists plpgsql_check');
    const { rows } = await db.pool.query<{ routine: string; level: string; message: string; lineno: number | null }>(`
      select p.oid::regprocedure::text as routine, r.level, r.message, r.lineno
        from pg_proc p
        left join lateral (select t.tgrelid from pg_trigger t where t.tgfoid = p.oid limit 1) t on true
        cross join lateral plpgsql_check_function_tb(p.oid, coalesce(t.tgrelid, 0),
          oldtable => case when p.proname like 'tg_new_order_detail%' then 'old_lines' when p.proname like 'tg_new_order%' then 'old_orders' end,
          newtable => case when p.proname like 'tg_new_order_detail%' then 'new_lines' when p.proname like 'tg_new_order%' then 'new_orders' end,
          extra_warnings => true) r
       where p.pronamespace = 'order_automation'::regnamespace
         and p.prolang = (select oid from pg_language where lanname = 'plpgsql')`);
    const checked = await db.pool
      .query(`select count(*)::int n from pg_proc where pronamespace = 'order_automation'::regnamespace
      and prolang = (select oid from pg_language where lanname = 'plpgsql')`);
    expect(checked.rows[0].n).toBeGreaterThan(15);
    expect(rows.map((r) => `${r.routine}:${r.lineno ?? ''} ${r.level}: ${r.message}`)).toEqual([]);
  });
});

describe('pg_cron in another database', () => {
  test("the SQL installer refuses to schedule outside pg_cron's database, naming it and the fix (OA010)", async () => {
    const db = await createTestDatabase();
    created.push(db);
    const error = await db.pool
      .query('select order_automation.schedule_jobs()')
      .catch((e: { code: string; message: string; hint: string }) => e);
    expect(error).toMatchObject({ code: 'OA010' });
    const { message, hint } = error as { message: string; hint: string };
    expect(message).toContain(
      `pg_cron runs in database ${inject('cronDatabase')} (cron.database_name), not in ${db.name}`,
    );
    expect(message).toContain('cron.schedule_in_database');
    expect(hint).toContain('--no-schedule');
  });
});
