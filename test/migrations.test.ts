// Installing: migrations run twice or at once do no harm, down removes what up added, a migrated
// database holds exactly the definitions of sql/, and every routine passes plpgsql_check.
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
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

describe('making a release', { timeout: 180_000 }, () => {
  const root = fileURLToPath(new URL('..', import.meta.url));
  type Releases = typeof import('../migrations/snapshots/index.js');
  const copies: string[] = [];
  afterAll(() => copies.forEach((copy) => rmSync(copy, { recursive: true, force: true })));

  /**
   * A copy of sql/, the snapshots and the script, so that a trial release never reaches the tree, with
   * whatever sql/ holds that no release has frozen yet released first (9990): a trial then changes only
   * what it changes itself.
   */
  async function trialTree() {
    const copy = mkdtempSync(join(tmpdir(), 'oa-release-'));
    copies.push(copy);
    for (const path of ['sql', 'migrations/snapshots', 'scripts/snapshot.ts']) {
      cpSync(join(root, path), join(copy, path), { recursive: true });
    }
    const snapshotScript = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
      promisify(execFile)(join(root, 'node_modules/.bin/tsx'), [join(copy, 'scripts/snapshot.ts'), ...args]).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    expect((await snapshotScript('9990_catch_up')).code).toBe(0);
    const releases = (await import(pathToFileURL(join(copy, 'migrations/snapshots/index.ts')).href)) as Releases;
    return { copy, snapshotScript, releases };
  }

  async function definitionOf(db: TestDatabase, routine: string): Promise<string | undefined> {
    const { rows } = await db.pool.query<{ def: string }>(
      `select pg_get_functiondef(p.oid) as def from pg_proc p where p.oid = to_regproc($1)`,
      [routine],
    );
    return rows[0]?.def;
  }

  test('a release that changes one line of a routine file freezes only that line; up applies it and down restores its previous release', async () => {
    const { copy, snapshotScript, releases } = await trialTree();
    expect(await snapshotScript('9991_nothing')).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/^nothing in sql\/ changed/),
    });
    expect(existsSync(join(copy, 'migrations/snapshots/9991_nothing.sql'))).toBe(false);
    const file = join(copy, 'sql/310_purge_history.sql');
    const text = readFileSync(file, 'utf8');
    // A comment line inside the procedure's body: part of its definition, harmless to change.
    const line = text.split('\n').find((l) => l.startsWith("  -- pg_cron's log of our jobs"))!;
    const changedLine = `${line} Changed by the trial.`;
    writeFileSync(
      file,
      text.replace(line, () => changedLine),
    );
    expect((await snapshotScript('9992_trial')).code).toBe(0);

    const [purge, privileges] = releases.sections('9992_trial');
    expect([purge?.file, privileges]).toEqual([
      '310_purge_history.sql',
      { file: '600_privileges.sql', from: releases.released('600_privileges.sql', '9992_trial')!.release },
    ]);
    // The changed line, with two lines of context each side: nothing else of the file.
    const hunk = purge!.diff!.trimEnd().split('\n');
    expect(hunk).toHaveLength(1 + 2 + 2 + 2);
    expect(hunk[0]).toMatch(/^@@ -\d+,5 \+\d+,5 @@$/);
    expect(hunk.filter((l) => /^[-+]/.test(l))).toEqual([`-${line}`, `+${changedLine}`]);
    expect(releases.released('310_purge_history.sql')!.text).toBe(readFileSync(file, 'utf8'));

    // A released snapshot never changes; an unreleased one may be made again.
    expect((await snapshotScript('9992_trial')).code).toBe(2);
    expect((await snapshotScript('9992_trial', '--replace')).code).toBe(0);

    const db = await createTestDatabase();
    created.push(db);
    const before = await definitionOf(db, 'order_automation.purge_history');
    expect(before).toContain(line);
    // up applies the whole changed file, then the privileges file as last released (new routines need their grants).
    const up = releases.apply('9992_trial');
    expect(up).toContain(readFileSync(file, 'utf8'));
    expect(up).toContain(readFileSync(join(copy, 'sql/600_privileges.sql'), 'utf8').trimEnd());
    await db.pool.query(up);
    expect(await definitionOf(db, 'order_automation.purge_history')).toBe(before!.replace(line, changedLine));
    await db.pool.query(releases.previous('9992_trial'));
    expect(await definitionOf(db, 'order_automation.purge_history')).toBe(before);
  });

  test('a new routine file is frozen as a diff adding every line; a frozen diff that no longer matches is refused, naming release and file', async () => {
    const { copy, snapshotScript, releases } = await trialTree();
    const added = join(copy, 'sql/320_trial.sql');
    writeFileSync(
      added,
      '-- A trial routine.\ncreate or replace function order_automation.trial_answer() returns int\nlanguage sql as $$ select 42 $$;\n',
    );
    expect(await snapshotScript('9992_trial')).toMatchObject({
      code: 0,
      stdout: expect.stringContaining('320_trial.sql'),
    });
    const [section] = releases.sections('9992_trial');
    expect(section).toEqual({
      file: '320_trial.sql',
      diff: `@@ -0,0 +1,3 @@\n${readFileSync(added, 'utf8').replace(/^/gm, '+').slice(0, -1)}\n`,
    });

    const db = await createTestDatabase();
    created.push(db);
    await db.pool.query(releases.apply('9992_trial'));
    expect((await db.pool.query('select order_automation.trial_answer() as answer')).rows).toEqual([{ answer: 42 }]);
    // The file has no earlier release: down has nothing of it to apply again (it drops the function itself).
    expect(releases.previous('9992_trial')).not.toContain('320_trial.sql');

    // The next release changes the file again: its diff applies onto the file as composed so far.
    writeFileSync(added, readFileSync(added, 'utf8').replace('select 42', 'select 43'));
    expect((await snapshotScript('9993_next')).code).toBe(0);
    expect(releases.sections('9993_next')[0]!.diff).toContain('+language sql as $$ select 43 $$;');
    expect(releases.apply('9993_next')).toContain(readFileSync(added, 'utf8'));
    // An earlier snapshot edited after the fact: composing the file fails loudly, never approximately.
    const frozen = join(copy, 'migrations/snapshots/9992_trial.sql');
    writeFileSync(frozen, readFileSync(frozen, 'utf8').replace('select 42', 'select 41'));
    expect(() => releases.apply('9993_next')).toThrow(
      "9993_next: 320_trial.sql: the frozen diff does not apply to the file's previous release: " +
        '@@ -1,3 +1,3 @@ expects line 3 to be "language sql as $$ select 42 $$;", it is "language sql as $$ select 41 $$;"',
    );
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
