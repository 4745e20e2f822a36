// Managed PostgreSQL: a superuser created pg_cron, and the package is installed, run and controlled by
// an owner role that is no superuser, with exactly the grants the README lists (read from the README
// itself), in both places pg_cron can live: the shop's own database, and another database of the
// server. doctor names each grant removed with its exact line, and drift between the package and
// pg_cron. A server of the test's own: it starts without the package's roles, as a managed one does.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  doctor,
  getStatus,
  migrate,
  pauseJob,
  placeOrder,
  resumeJob,
  setSchedule,
  type DoctorReport,
} from '../src/index.js';
import { cliInProcess } from './cli-in-process.js';
import { seedBookstore } from './helpers.js';
import { ownServer, type OwnServer } from './reliability/own-server.js';
import { endPool, newClient, newPool } from './setup/connections.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(`${root}README.md`, 'utf8');

interface Grant {
  /** Where it runs: the shop's database, pg_cron's, or anywhere (a role-wide grant). */
  in: 'shop' | 'cron';
  sql: string;
}

/** The statements of the README's code block after `<!-- grants: name -->`, with where each one runs. */
function readmeGrants(name: string): Grant[] {
  const at = readme.indexOf(`<!-- grants: ${name} -->`);
  expect(at, `README block ${name}`).toBeGreaterThan(0);
  const block = /```sql\n([\s\S]*?)```/.exec(readme.slice(at))![1]!;
  let where: Grant['in'] = 'shop';
  const grants: Grant[] = [];
  for (const line of block.split('\n').map((l) => l.trim())) {
    if (line.startsWith('--')) {
      if (/in pg_cron's database/.test(line)) where = 'cron';
      else if (/in database shop/.test(line)) where = 'shop';
    } else if (line) grants.push({ in: where, sql: line });
  }
  return grants;
}

/** A README line for this test's role and database. */
const forRole = (sql: string, role: string, database: string) =>
  sql.replace(/\bshop_owner\b/g, role).replace(/\bDATABASE shop\b/g, `DATABASE ${database}`);

const revokeOf = (sql: string) =>
  sql.replace(/^GRANT /, 'REVOKE ').replace(/ TO (\w+)( WITH ADMIN OPTION)?;$/, ' FROM $1;');

let server: OwnServer;
const url = (database: string, role = 'postgres') => {
  const u = new URL(server.url);
  u.username = role;
  u.pathname = `/${database}`;
  return u.toString();
};
async function superuser<T>(database: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = newClient({ connectionString: url(database) });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

beforeAll(async () => {
  server = await ownServer();
}, 180_000);
afterAll(async () => server?.stop());

/** The fix lines of doctor's problems. */
const problemLines = (report: DoctorReport) =>
  report.checks.filter((c) => c.status === 'problem').flatMap((c) => c.fix?.lines ?? []);

interface Placement {
  name: string;
  shop: string;
  cron: string;
  grants: Grant[];
  owner: string;
}

const cronDatabase = 'postgres'; // scripts/database/local.ts sets cron.database_name so

async function grant(p: Placement, role: string, grants: Grant[]): Promise<void> {
  for (const g of grants) {
    await superuser(g.in === 'cron' ? p.cron : p.shop, (c) => c.query(forRole(g.sql, role, p.shop)));
  }
}

/** Each grant left out in turn, for a fresh role: doctor names exactly that grant's line. */
async function eachGrantMissing(p: Placement): Promise<void> {
  for (const [i, missing] of p.grants.entries()) {
    const role = `${p.name}_${i}`;
    await superuser(p.shop, (c) => c.query(`create role ${role} login`));
    await grant(
      p,
      role,
      p.grants.filter((_, j) => j !== i),
    );
    const report = await doctor(url(p.shop, role));
    expect(report.ok, missing.sql).toBe(false);
    expect(problemLines(report), missing.sql).toContain(forRole(missing.sql, role, p.shop));
    // Only that grant, and the install itself, are missing.
    expect(
      report.checks.filter((c) => c.status === 'problem').map((c) => c.id),
      missing.sql,
    ).toHaveLength(2);
    // And it is needed: the install refuses before applying anything. (Without a way to the roles the
    // install goes on, warned; without alter_job elsewhere it installs, but cannot set, pause or resume.)
    if (!/CREATEROLE|WITH ADMIN OPTION/.test(missing.sql) && !(p.shop !== p.cron && /alter_job/.test(missing.sql))) {
      await expect(migrate(url(p.shop, role)), missing.sql).rejects.toThrow();
      const schema = await superuser(p.shop, (c) =>
        c.query(`select from pg_namespace where nspname = 'order_automation'`),
      );
      expect(schema.rowCount, missing.sql).toBe(0);
    }
  }
}

/** Installs as the owner with every grant, checks the jobs are its own, and that doctor says all is well. */
async function install(p: Placement): Promise<void> {
  await superuser(p.shop, (c) => c.query(`create role ${p.owner} login`));
  await grant(p, p.owner, p.grants);
  const before = await doctor(url(p.shop, p.owner));
  expect(before.checks.filter((c) => c.status === 'problem').map((c) => c.id)).toEqual(['package.installed']);
  const told: string[] = [];
  const result = await migrate(url(p.shop, p.owner), { log: (line) => told.push(line) });
  expect(result.scheduledIn).toBe(p.cron);
  expect(told.filter((l) => l.startsWith('warning'))).toEqual([]);
  expect(result.warnings).toEqual([]);
  const jobs = await superuser(p.cron, (c) =>
    c.query<{ jobname: string; username: string; database: string; active: boolean }>(
      `select jobname, username, database, active from cron.job where database = $1 order by jobname`,
      [p.shop],
    ),
  );
  expect(jobs.rows).toHaveLength(4);
  for (const job of jobs.rows) expect(job).toMatchObject({ username: p.owner, database: p.shop, active: true });
  const healthy = await doctor(url(p.shop, p.owner));
  expect(healthy.checks.filter((c) => c.status !== 'ok')).toEqual([]);
  expect(healthy.ok).toBe(true);
  const cli = await cliInProcess(['doctor'], url(p.shop, p.owner));
  expect(cli.code).toBe(0);
  expect(cli.stdout).toMatch(/\nAll is well\.\n$/);
}

/** Each grant pg_cron's side needs, revoked from the installed owner in turn: doctor names it; granted back. */
async function eachCronGrantRevoked(p: Placement): Promise<void> {
  const revocable = p.grants.filter((g) => !/ON DATABASE|ON SCHEMA public|CREATEROLE|WITH ADMIN OPTION/.test(g.sql));
  // USAGE on schema cron and alter_job; in the other placement also schedule_in_database and pg_read_all_settings.
  expect(revocable.length).toBe(p.shop === p.cron ? 2 : 4);
  for (const g of revocable) {
    const line = forRole(g.sql, p.owner, p.shop);
    await superuser(g.in === 'cron' ? p.cron : p.shop, (c) => c.query(revokeOf(line)));
    const report = await doctor(url(p.shop, p.owner));
    expect(report.ok, line).toBe(false);
    expect(problemLines(report), line).toContain(line);
    await superuser(g.in === 'cron' ? p.cron : p.shop, (c) => c.query(line));
  }
  expect((await doctor(url(p.shop, p.owner))).ok).toBe(true);
}

const roles = readmeGrants('roles');
const same: Placement = {
  name: 'same',
  shop: cronDatabase,
  cron: cronDatabase,
  // The first install on this server: the installer creates the package's roles.
  grants: [...readmeGrants('same database'), roles[0]!],
  owner: 'shop_owner_same',
};
const other: Placement = {
  name: 'other',
  shop: 'shop_other',
  cron: cronDatabase,
  // The roles exist by then: the installer is given the right to grant them.
  grants: [...readmeGrants('another database'), roles[1]!],
  owner: 'shop_owner_other',
};

describe('a non-superuser owner with exactly the README grants', () => {
  test("the README's grant lines are the ones this test applies", () => {
    expect(roles.map((g) => g.sql)).toEqual([
      'ALTER ROLE shop_owner CREATEROLE;',
      'GRANT order_automation_app TO shop_owner WITH ADMIN OPTION;',
    ]);
    expect(same.grants.every((g) => g.in === 'shop')).toBe(true);
    expect(other.grants.filter((g) => g.in === 'cron').map((g) => g.sql)).toContain(
      'GRANT EXECUTE ON FUNCTION cron.schedule_in_database(text,text,text,text,text,boolean) TO shop_owner;',
    );
  });

  test('without CREATEROLE, where the roles do not exist, the install warns and goes on; doctor says how to add them', async () => {
    await superuser(cronDatabase, (c) => c.query('create database shop_warned'));
    const p: Placement = { name: 'warned', shop: 'shop_warned', cron: cronDatabase, grants: [], owner: 'warned_owner' };
    const withoutSchedule = readmeGrants('another database').filter(
      (g) => g.in === 'shop' || /pg_read_all_settings/.test(g.sql),
    );
    await superuser(p.shop, (c) => c.query(`create role ${p.owner} login`));
    await grant(p, p.owner, withoutSchedule);
    const told: string[] = [];
    const { warnings } = await migrate(url(p.shop, p.owner), { schedule: false, log: (line) => told.push(line) });
    expect(told).toEqual(warnings.map((w) => `warning: ${w}`));
    expect(told).toEqual([
      `warning: role "${p.owner}" may not create roles (no CREATEROLE), so order_automation_app and order_automation_admin are not created and nothing of the package is granted to other roles: only "${p.owner}" can use it. To have them: as a superuser, before installing, run ALTER ROLE ${p.owner} CREATEROLE;`,
    ]);
    const report = await doctor(url(p.shop, p.owner), { schedule: false });
    const roleCheck = report.checks.find((c) => c.id === 'roles')!;
    expect(roleCheck.status).toBe('problem');
    expect(roleCheck.fix!.lines).toEqual([
      `ALTER ROLE ${p.owner} CREATEROLE;`,
      'psql "$DATABASE_URL" -f node_modules/order-automation/sql/600_privileges.sql',
    ]);
    // Those lines work: the roles exist afterwards and doctor is content.
    await superuser(p.shop, (c) => c.query(roleCheck.fix!.lines[0]!));
    const owner = newClient({ connectionString: url(p.shop, p.owner) });
    await owner.connect();
    await owner.query(readFileSync(`${root}sql/600_privileges.sql`, 'utf8'));
    await owner.end();
    expect((await doctor(url(p.shop, p.owner), { schedule: false })).ok).toBe(true);
    // Back to a server without the roles, for the first install below.
    await superuser(cronDatabase, async (c) => {
      await c.query('drop database shop_warned with (force)');
      await c.query('drop role order_automation_admin, order_automation_app, warned_owner');
    });
  }, 120_000);

  test('pg_cron in the same database: doctor names each grant left out; with all of them the owner installs, and doctor is content', async () => {
    await eachGrantMissing(same);
    await install(same);
    await eachCronGrantRevoked(same);
  }, 180_000);

  test('pg_cron in another database: the same, where the roles exist already', async () => {
    await superuser(cronDatabase, (c) => c.query(`create database ${other.shop}`));
    await eachGrantMissing(other);
    await install(other);
    await eachCronGrantRevoked(other);
  }, 180_000);

  test("pg_cron's own tick runs the automation as the owner, in both placements", async () => {
    for (const p of [same, other]) {
      const pool = newPool({ connectionString: url(p.shop, p.owner) });
      try {
        await seedBookstore(pool);
        await placeOrder(pool, {
          orderId: 'late',
          userId: 'buyer1',
          storeId: 'store1',
          items: [{ bookId: 'book1', count: 2, price: 10 }],
        });
        await pool.query(`update new_order set pay_deadline = now() - interval '1 minute' where order_id = 'late'`);
      } finally {
        await endPool(pool);
      }
    }
    const cancelled = (p: Placement) =>
      superuser(
        p.shop,
        async (c) => (await c.query(`select state from new_order where order_id = 'late'`)).rows[0].state === 4,
      );
    const deadline = Date.now() + 100_000;
    while (Date.now() < deadline && !((await cancelled(same)) && (await cancelled(other)))) {
      await new Promise((r) => setTimeout(r, 1000));
    }
    for (const p of [same, other]) {
      expect(await cancelled(p), p.name).toBe(true);
      const runs = await superuser(p.cron, (c) =>
        c.query<{ username: string; status: string }>(
          `select j.username, d.status from cron.job_run_details d join cron.job j using (jobid)
            where j.database = $1 and j.jobname ~ '(cancel_expired|confirm_shipped)_orders'`,
          [p.shop],
        ),
      );
      // Either job's run may be the database's waiter (running until just past the next tick).
      expect(runs.rows.length, p.name).toBeGreaterThan(0);
      expect(
        runs.rows.every((r) => r.username === p.owner && (r.status === 'succeeded' || r.status === 'running')),
        p.name,
      ).toBe(true);
      const cause = await superuser(p.shop, (c) =>
        c.query(`select cause from order_automation.order_event where order_id = 'late' and to_state = 4`),
      );
      expect(cause.rows).toEqual([{ cause: 'payment_timeout' }]);
    }
  }, 150_000);

  test('the owner changes, pauses and resumes the schedule; doctor reports drift and its fix works', async () => {
    for (const p of [same, other]) {
      const owner = url(p.shop, p.owner);
      const inCron = async () =>
        (
          await superuser(p.cron, (c) =>
            c.query<{ schedule: string; active: boolean; jobid: string }>(
              'select schedule, active, jobid::text from cron.job where jobname = $1',
              [`order_automation.cancel_expired_orders@${p.shop}`],
            ),
          )
        ).rows[0]!;
      await setSchedule(owner, 'cancel_expired_orders', { schedule: '*/7 * * * *' });
      expect(await inCron()).toMatchObject({ schedule: '*/7 * * * *', active: true });
      await pauseJob(owner, 'cancel_expired_orders');
      expect(await inCron()).toMatchObject({ active: false });
      expect((await getStatus(owner)).jobs.find((j) => j.job === 'cancel_expired_orders')).toMatchObject({
        active: false,
      });
      await resumeJob(owner, 'cancel_expired_orders');
      await setSchedule(owner, 'cancel_expired_orders', { schedule: '* * * * *' });
      expect(await inCron()).toMatchObject({ schedule: '* * * * *', active: true });

      // Drift: pg_cron changed behind the package's back.
      const { jobid } = await inCron();
      await superuser(p.cron, (c) => c.query('select cron.alter_job($1, active => false)', [jobid]));
      const drifted = await doctor(owner);
      expect(drifted.checks.filter((c) => c.status === 'problem')).toEqual([
        {
          id: 'jobs.active',
          status: 'problem',
          summary: 'cancel_expired_orders is paused in pg_cron but recorded as active',
          fix: {
            where: `in a shell, as role "${p.owner}" or an admin`,
            lines: ['npx order-automation schedule resume cancel'],
          },
        },
      ]);
      expect((await cliInProcess(['schedule', 'resume', 'cancel'], owner)).code).toBe(0);
      expect((await doctor(owner)).ok).toBe(true);

      await superuser(p.cron, (c) => c.query('select cron.unschedule($1::bigint)', [jobid]));
      const missing = await doctor(owner);
      const check = missing.checks.find((c) => c.id === 'jobs.missing')!;
      expect(check.status).toBe('problem');
      const cli = await cliInProcess(['doctor'], owner);
      expect(cli.code).toBe(1);
      expect(cli.stdout).toContain(check.fix!.lines[0]!);
      // The line given re-creates the job, as the owner.
      await (async () => {
        const client = newClient({ connectionString: url(p.cron, p.owner) });
        await client.connect();
        try {
          await client.query(check.fix!.lines[0]!);
        } finally {
          await client.end();
        }
      })();
      expect((await doctor(owner)).ok).toBe(true);
    }
  }, 120_000);

  test('the owner removes the package and its jobs', async () => {
    for (const p of [same, other]) {
      await migrate(url(p.shop, p.owner), { direction: 'down', confirm: true });
      const left = await superuser(p.cron, (c) =>
        c.query('select jobname from cron.job where database = $1', [p.shop]),
      );
      expect(left.rows).toEqual([]);
    }
  }, 60_000);
});
