// "No role other than the installing one can change what pg_cron runs or make code run with the
// installer's rights": the app and admin roles, as adversaries, write everything they are allowed to
// (and try what they are not), plant objects where they may, build a fake pg_cron in a database
// they own; then the installer migrates, reads the status, pauses and resumes, and pg_cron ticks for
// real. pg_cron must only ever run the package's fixed commands, as the installer, and no role may
// come out with a right it did not have. Both placements of pg_cron: another database of the server
// (the shared test server) and this database (a server of the test's own).
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import {
  getStatus,
  migrate,
  pauseJob,
  PgCronJobMissingError,
  placeOrder,
  resumeJob,
  setSchedule,
  payOrder,
  shipOrder,
} from '../../src/index.js';
import { admin as asSuperuser, createTestDatabase, seedBookstore, type TestDatabase } from '../helpers.js';
import { databaseUrl } from '../setup/urls.js';
import { ownServer, type OwnServer } from './own-server.js';
import { openFigures, type Tally } from './support.js';

const tally = openFigures(import.meta.url);
const fixedCommands = [
  'CALL order_automation.cancel_expired_orders()',
  'CALL order_automation.confirm_shipped_orders()',
  'CALL order_automation.purge_cancelled_orders()',
  'CALL order_automation.purge_history()',
];

// ── the adversaries ─────────────────────────────────────────────────────────

interface Cast {
  app: string;
  admin: string;
  stranger: string;
  /** A database the admin login owns, where it builds a fake pg_cron. */
  ownDatabase: string;
}

function castOf(tag: string): Cast {
  const suffix = `${tag}_${randomBytes(3).toString('hex')}`;
  return {
    app: `esc_app_${suffix}`,
    admin: `esc_admin_${suffix}`,
    stranger: `esc_nobody_${suffix}`,
    ownDatabase: `esc_own_${suffix}`,
  };
}

const asRole = (url: string, role: string, database?: string) => {
  const u = new URL(url);
  u.username = role;
  u.password = '';
  if (database !== undefined) u.pathname = `/${database}`;
  return u.toString();
};

/** A function (owned by `attacker`) that logs each call and, when a superuser runs it, makes `attacker` a superuser. */
function trapFunctionSql(schema: string, attacker: string): string {
  return `
    create function ${schema}.trap(what text) returns boolean language plpgsql as $trap$
    begin
      insert into public.escalation_log (what, by_role) values (what, current_user);
      if (select r.rolsuper from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) current_user) then
        execute pg_catalog.format('alter role %I superuser', ${pg.escapeLiteral(attacker)});
      end if;
      return true;
    end $trap$;
    grant execute on function ${schema}.trap(text) to public`;
}

/** A schema cron that looks like pg_cron's, every object of it a trap, with a job of each of the package's names. */
function fakeCronSql(attacker: string, appDatabase: string): string {
  const names = ['cancel_expired_orders', 'confirm_shipped_orders', 'purge_cancelled_orders', 'purge_history'];
  return `
    create table if not exists public.escalation_log (what text, by_role text, at timestamptz default clock_timestamp());
    grant insert, select on public.escalation_log to public;
    drop schema if exists cron cascade;
    create schema cron;
    grant usage on schema cron to public;
    ${trapFunctionSql('cron', attacker)};
    create table cron.job_rows (jobid bigint, jobname text, schedule text, command text, active boolean,
      username text, database text, nodename text default 'localhost', nodeport integer default 5432);
    insert into cron.job_rows (jobid, jobname, schedule, command, active, username, database)
    select n, 'order_automation.' || j || '@' || ${pg.escapeLiteral(appDatabase)}, '* * * * *',
           'ALTER ROLE ' || ${pg.escapeLiteral(attacker)} || ' SUPERUSER', true, 'postgres', ${pg.escapeLiteral(appDatabase)}
      from unnest(array[${names.map((n) => pg.escapeLiteral(n)).join(', ')}]) with ordinality as x(j, n);
    create view cron.job as select r.* from cron.job_rows r where cron.trap('view cron.job');
    create view cron.job_run_details as
      select 0::bigint as jobid, 0::bigint as runid, ''::text as command, ''::text as status, now() as end_time
       where cron.trap('view cron.job_run_details');
    grant select on cron.job, cron.job_run_details to public;
    create function cron.schedule(text, text, text) returns bigint language sql as $$ select 1::bigint where cron.trap('cron.schedule') $$;
    create function cron.schedule_in_database(job_name text, schedule text, command text, database text,
      username text default null, active boolean default true) returns bigint
      language sql as $$ select 1::bigint where cron.trap('cron.schedule_in_database') $$;
    create function cron.alter_job(job_id bigint, schedule text default null, command text default null,
      database text default null, username text default null, active boolean default null) returns void language sql as $$ select cron.trap('cron.alter_job'); $$;
    create function cron.unschedule(bigint) returns boolean language sql as $$ select cron.trap('cron.unschedule') $$;
    create function cron.unschedule(name) returns boolean language sql as $$ select cron.trap('cron.unschedule(name)') $$;
    grant execute on all functions in schema cron to public`;
}

/** Functions and a view in public named like what the installer's code calls. */
function publicTrapsSql(attacker: string): string {
  const returning = (signature: string, type: string, real: string) =>
    `create function public.${signature} returns ${type} language sql as $$ select public.trap('${signature.replace(/'/g, "''")}'); select ${real} $$`;
  return [
    `create table if not exists public.escalation_log (what text, by_role text, at timestamptz default clock_timestamp())`,
    'grant insert, select on public.escalation_log to public',
    trapFunctionSql('public', attacker),
    returning('job_command(text)', 'text', `'ALTER ROLE ${attacker} SUPERUSER'`),
    returning('cron_jobname(text)', 'text', '$1'),
    returning('cron_schema()', 'text', `'public'`),
    returning('format(text, text)', 'text', 'pg_catalog.format($1, $2)'),
    returning('starts_with(text, text)', 'boolean', 'pg_catalog.starts_with($1, $2)'),
    returning('char_length(text)', 'integer', 'pg_catalog.char_length($1)'),
    returning('hashtext(text)', 'integer', 'pg_catalog.hashtext($1)'),
    returning('pg_has_role(name, text, text)', 'boolean', 'pg_catalog.pg_has_role($1, $2, $3)'),
    returning('current_database()', 'name', 'pg_catalog.current_database()'),
    `create view public.job as select public.trap('view public.job') as job`,
  ].join(';\n');
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function readLog(url: string): Promise<string[]> {
  const client = await connect(url);
  try {
    const exists = await client.query(`select to_regclass('public.escalation_log') is not null as ok`);
    if (!exists.rows[0].ok) return [];
    return (
      await client.query<{ line: string }>(`select what || ' as ' || by_role as line from public.escalation_log`)
    ).rows.map((r) => r.line);
  } finally {
    await client.end();
  }
}

/** What the cluster says each role is and may do: compared before and after. */
async function rights(serverUrl: string, appDatabase: string, cast: Cast): Promise<string[]> {
  const attackers = [cast.app, cast.admin, cast.stranger];
  const client = await connect(serverUrl);
  try {
    const roles = await client.query<{ line: string }>(`
      select 'role ' || rolname || ' ' || concat_ws(',', rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
             rolreplication, rolbypassrls, rolconnlimit) as line from pg_roles
      union all
      select 'member ' || m.roleid::regrole || ' > ' || m.member::regrole || ' ' || m.admin_option from pg_auth_members m
      order by 1`);
    const app = await connect(databaseUrl(serverUrl, appDatabase));
    try {
      const objects = await app.query<{ line: string }>(
        `
        select 'relation ' || c.oid::regclass || ' ' || pg_get_userbyid(c.relowner) || ' ' || coalesce(c.relacl::text, '') as line
          from pg_class c where c.relnamespace in ('order_automation'::regnamespace, 'public'::regnamespace) and c.relkind in ('r', 'v', 'S', 'm', 'p')
            and pg_get_userbyid(c.relowner) <> all ($1::text[])
        union all
        select 'routine ' || p.oid::regprocedure || ' ' || pg_get_userbyid(p.proowner) || ' ' || p.prosecdef || ' ' || coalesce(p.proacl::text, '')
          from pg_proc p where p.pronamespace in ('order_automation'::regnamespace, 'public'::regnamespace)
            and pg_get_userbyid(p.proowner) <> all ($1::text[])
        union all
        select 'schema ' || n.nspname || ' ' || pg_get_userbyid(n.nspowner) || ' ' || coalesce(n.nspacl::text, '')
          from pg_namespace n where n.nspname in ('order_automation', 'public')
        order by 1`,
        [attackers],
      );
      return [...roles.rows, ...objects.rows].map((r) => r.line);
    } finally {
      await app.end();
    }
  } finally {
    await client.end();
  }
}

/**
 * Runs one attempt as a lesser role. `allowed`: a write the role may make (it must succeed); otherwise
 * it must be refused, and one that goes through counts as a successful escalation.
 */
async function attempt(
  tally: Tally,
  breaches: string[],
  url: string,
  what: string,
  statements: string | string[],
  allowed = false,
): Promise<void> {
  tally.escalationAttempts++;
  const client = await connect(url);
  try {
    for (const statement of Array.isArray(statements) ? statements : [statements]) await client.query(statement);
    if (!allowed) breaches.push(`not refused: ${what}`);
  } catch (error) {
    if (allowed) throw new Error(`${what}: an allowed write failed: ${(error as Error).message}`, { cause: error });
  } finally {
    await client.end();
  }
}

/** The cron.job rows pg_cron holds for `database`. */
async function cronJobs(
  cronUrl: string,
  database: string,
): Promise<{ jobname: string; command: string; username: string; active: boolean; schedule: string }[]> {
  const client = await connect(cronUrl);
  try {
    return (
      await client.query(
        'select jobname, command, username, active, schedule from cron.job where database = $1 order by jobname',
        [database],
      )
    ).rows;
  } finally {
    await client.end();
  }
}

// ── bookkeeping of what the tests create ────────────────────────────────────

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

async function createCast(serverUrl: string, cast: Cast, appDatabase: string): Promise<void> {
  const server = await connect(serverUrl);
  try {
    await server.query(`
      create role ${cast.app} login in role order_automation_app;
      create role ${cast.admin} login in role order_automation_admin;
      create role ${cast.stranger} login`);
    await server.query(`create database ${cast.ownDatabase} owner ${cast.admin}`);
  } finally {
    await server.end();
  }
  cleanups.push(async () => {
    const c = await connect(serverUrl);
    try {
      await c.query(`drop database if exists ${cast.ownDatabase} with (force)`);
      for (const role of [cast.app, cast.admin, cast.stranger]) {
        await c.query(`alter role ${role} nosuperuser`).catch(() => undefined);
      }
    } finally {
      await c.end();
    }
    const app = await connect(databaseUrl(serverUrl, appDatabase)).catch(() => undefined);
    if (app) {
      await app.query(`drop owned by ${cast.app}, ${cast.admin}, ${cast.stranger} cascade`).catch(() => undefined);
      await app.end();
    }
    const last = await connect(serverUrl);
    try {
      for (const role of [cast.app, cast.admin, cast.stranger]) {
        await last.query(`drop owned by ${role} cascade`).catch(() => undefined);
        await last.query(`drop role if exists ${role}`).catch(() => undefined);
      }
    } finally {
      await last.end();
    }
  });
  // A lax shop: both may create objects in public and schemas in the shop's database.
  const app = await connect(databaseUrl(serverUrl, appDatabase));
  try {
    await app.query(`grant create on schema public to ${cast.app}, ${cast.admin};
                     grant create on database ${appDatabase} to ${cast.app}, ${cast.admin}`);
  } finally {
    await app.end();
  }
}

/** Everything the app, admin and stranger logins try; the refused ones must be refused. */
async function attack(
  serverUrl: string,
  cronUrl: string,
  appDatabase: string,
  cast: Cast,
  breaches: string[],
  pgCronHere: boolean,
): Promise<void> {
  const appUrl = asRole(databaseUrl(serverUrl, appDatabase), cast.app);
  const adminUrl = asRole(databaseUrl(serverUrl, appDatabase), cast.admin);
  const strangerUrl = asRole(databaseUrl(serverUrl, appDatabase), cast.stranger);
  const go = (url: string, what: string, sql: string | string[], allowed = false) =>
    attempt(tally, breaches, url, what, sql, allowed);

  for (const [role, url] of [
    ['app', appUrl],
    ['admin', adminUrl],
    ['stranger', strangerUrl],
  ] as const) {
    // What pg_cron runs, and where the installer looks for it.
    await go(url, `${role}: rewrite a job's schedule`, `update order_automation.job set schedule = '* * * * *'`);
    await go(
      url,
      `${role}: point a job at another database`,
      `update order_automation.job set cron_database = '${cast.ownDatabase}'`,
    );
    await go(url, `${role}: add a job`, `insert into order_automation.job (job) values ('evil')`);
    await go(url, `${role}: delete the jobs`, `delete from order_automation.job`);
    await go(url, `${role}: give the job table a command`, `alter table order_automation.job add column command text`);
    await go(
      url,
      `${role}: replace job_command()`,
      `create or replace function order_automation.job_command(job text) returns text language sql as $$ select 'ALTER ROLE ${cast.app} SUPERUSER' $$`,
    );
    await go(
      url,
      `${role}: create a function in the package's schema`,
      `create function order_automation.evil() returns int language sql as 'select 1'`,
    );
    await go(url, `${role}: schedule the jobs itself`, `select order_automation.schedule_jobs()`);
    await go(url, `${role}: unschedule the jobs`, `select order_automation.unschedule_jobs()`);
    await go(url, `${role}: install the schedule`, `select order_automation.install_schedule()`);
    // The jobs' causes.
    await go(
      url,
      `${role}: write a claim`,
      `insert into order_automation.job_claim values (pg_current_xact_id(), 'payment_timeout')`,
    );
    await go(url, `${role}: claim a job's cause`, `select order_automation.claim_cause('payment_timeout')`);
    await go(
      url,
      `${role}: write the history`,
      `insert into order_automation.order_event (order_id, from_state, to_state, cause) values ('x', 0, 4, 'payment_timeout')`,
    );
    // Roles.
    await go(url, `${role}: grant itself the admin role`, `grant order_automation_admin to current_user`);
    await go(url, `${role}: grant the admin role to the stranger`, `grant order_automation_admin to ${cast.stranger}`);
    await go(
      url,
      `${role}: set the package's settings for the whole database`,
      `alter database ${appDatabase} set order_automation.schedule = 'off'`,
    );
    // pg_cron itself, where it lives.
    await go(
      asRole(cronUrl, cast[role]),
      `${role}: schedule a job in pg_cron`,
      `select cron.schedule('evil', '* * * * *', 'ALTER ROLE ${cast.app} SUPERUSER')`,
    );
    await go(
      asRole(cronUrl, cast[role]),
      `${role}: change pg_cron's jobs`,
      `update cron.job set command = 'ALTER ROLE ${cast.app} SUPERUSER'`,
    );
  }

  // The app: everything it may write, then the causes it may not record.
  await go(
    appUrl,
    'app: write orders, users, stores',
    [
      `insert into "user" (user_id, balance) values ('${cast.app}', 1000)`,
      `update "user" set balance = balance + 1 where user_id = 'buyer1'`,
      `update store set stock_level = stock_level + 1 where store_id = 'store1' and book_id = 'book1'`,
      `select order_automation.place_order('${cast.app}_o1', 'buyer1', 'store1', '[{"book_id": "book1", "count": 1, "price": 10}]')`,
      `update new_order set pay_deadline = now() + interval '1 hour' where order_id = '${cast.app}_o1'`,
    ],
    true,
  );
  await go(
    appUrl,
    'app: forge payment_timeout with set_order_state',
    `select order_automation.set_order_state('${cast.app}_o1', 4::smallint, 'payment_timeout')`,
  );
  await go(appUrl, 'app: forge payment_timeout with the cause setting', [
    `select set_config('order_automation.cause', 'payment_timeout', false)`,
    `update new_order set state = 4 where order_id = '${cast.app}_o1'`,
  ]);
  // PostgreSQL 15 lets no ordinary role put a setting of an unloaded module on its role or database.
  await go(
    appUrl,
    'app: set the cause setting for its role',
    `alter role current_user set order_automation.cause = 'receipt_timeout'`,
  );
  await go(appUrl, 'app: run the automation', `call order_automation.cancel_expired_orders()`);
  await go(appUrl, 'app: change the settings', `update order_automation.settings set batch_size = 1`);
  await go(
    appUrl,
    'app: change the store settings',
    `insert into order_automation.store_settings (store_id, payment_timeout) values ('store1', '1 second')`,
  );
  await go(
    appUrl,
    'app: change the schedule',
    `select order_automation.set_schedule('cancel_expired_orders', '*/5 * * * *')`,
  );
  await go(appUrl, 'app: plant objects in public', publicTrapsSql(cast.app), true);
  if (!pgCronHere) {
    await go(appUrl, 'app: create a fake pg_cron in the shop database', fakeCronSql(cast.app, appDatabase), true);
  } else {
    await go(appUrl, "app: add to pg_cron's schema", `create table cron.evil (x int)`);
  }

  // The admin: everything it may write.
  await go(
    adminUrl,
    'admin: change settings, store settings, the run log',
    [
      `update order_automation.settings set remind_before = interval '1 hour', batch_size = 500`,
      `insert into order_automation.store_settings (store_id, receipt_timeout) values ('store2', '2 minutes') on conflict (store_id) do update set receipt_timeout = excluded.receipt_timeout`,
      `select order_automation.set_schedule('purge_history', '17 * * * *')`,
    ],
    true,
  );
  await go(
    adminUrl,
    'admin: a schedule that is SQL',
    `select order_automation.set_schedule('purge_history', $$* * * * *'; ALTER ROLE ${cast.admin} SUPERUSER; --$$)`,
  );
  await go(
    adminUrl,
    'admin: cancel a paid order as the automation',
    [
      `select order_automation.place_order('${cast.admin}_p', 'buyer2', 'store1', '[{"book_id": "book2", "count": 1, "price": 10}]')`,
      `select order_automation.pay_order('${cast.admin}_p')`,
    ],
    true,
  );
  await go(adminUrl, 'admin: process_orders on a paid order', [
    `select order_automation.process_orders('cancel_expired_orders', array['${cast.admin}_p'])`,
    // Refused in effect if nothing moved: make "nothing moved" an error, so that a move is a breach.
    `do $$ begin if (select state from new_order where order_id = '${cast.admin}_p') = 1 then raise exception 'unchanged'; end if; end $$`,
  ]);
  await go(adminUrl, 'admin: forge receipt_timeout with the cause setting', [
    `select set_config('order_automation.cause', 'receipt_timeout', false)`,
    `update new_order set state = 4 where order_id = '${cast.admin}_p'`,
  ]);
  await go(adminUrl, 'admin: plant objects in public', `create view public.settings as select 1 as trap`, true);
  await go(
    asRole(databaseUrl(serverUrl, cast.ownDatabase), cast.admin),
    'admin: a fake pg_cron in a database it owns',
    fakeCronSql(cast.admin, appDatabase),
    true,
  );
  await go(
    asRole(databaseUrl(serverUrl, cast.ownDatabase), cast.admin),
    'admin: the package settings for its own database',
    `alter database ${cast.ownDatabase} set order_automation.schedule = 'external'`,
    false,
  );
}

/** Waits until pg_cron has run both order jobs (a due order cancelled and a shipped one confirmed by the jobs). */
async function waitForTick(url: string, prefix: string): Promise<{ cancelled: boolean; confirmed: boolean }> {
  const client = await connect(url);
  try {
    const deadline = Date.now() + 110_000;
    for (;;) {
      const { rows } = await client.query<{ cancelled: boolean; confirmed: boolean }>(
        `select exists (select from order_automation.order_event where order_id = $1 and cause = 'payment_timeout') as cancelled,
                exists (select from order_automation.order_event where order_id = $2 and cause = 'receipt_timeout') as confirmed`,
        [`${prefix}_due`, `${prefix}_sent`],
      );
      if ((rows[0]!.cancelled && rows[0]!.confirmed) || Date.now() > deadline) return rows[0]!;
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    await client.end();
  }
}

async function dueOrders(url: string, prefix: string): Promise<void> {
  await placeOrder(url, {
    orderId: `${prefix}_due`,
    userId: 'buyer1',
    storeId: 'store1',
    items: [{ bookId: 'book3', count: 1, price: 5 }],
  });
  await placeOrder(url, {
    orderId: `${prefix}_sent`,
    userId: 'buyer1',
    storeId: 'store1',
    items: [{ bookId: 'book3', count: 1, price: 5 }],
  });
  await payOrder(url, `${prefix}_sent`);
  await shipOrder(url, `${prefix}_sent`);
  const client = await connect(url);
  try {
    await client.query(`update new_order set pay_deadline = now() - interval '1 minute' where order_id = $1`, [
      `${prefix}_due`,
    ]);
    await client.query(`update new_order set receipt_deadline = now() - interval '1 minute' where order_id = $1`, [
      `${prefix}_sent`,
    ]);
  } finally {
    await client.end();
  }
}

/** What the tick and the installer's commands left: cron.job, pg_cron's run log, the traps' logs, the rights. */
async function verdict(options: {
  label: string;
  serverUrl: string;
  cronUrl: string;
  appDatabase: string;
  cast: Cast;
  installer: string;
  before: string[];
  breaches: string[];
}): Promise<void> {
  const { label, serverUrl, cronUrl, appDatabase, cast, installer, before, breaches } = options;
  const jobs = await cronJobs(cronUrl, appDatabase);
  const foreign = jobs.filter((j) => !fixedCommands.includes(j.command) || j.username !== installer);
  const cron = await connect(cronUrl);
  let ran: string[];
  let othersJobs: number;
  try {
    ran = (
      await cron.query<{ command: string }>(
        `select distinct d.command from cron.job_run_details d join cron.job j using (jobid) where j.database = $1`,
        [appDatabase],
      )
    ).rows.map((r) => r.command);
    othersJobs = Number(
      (
        await cron.query(`select count(*) n from cron.job where username = any ($1)`, [
          [cast.app, cast.admin, cast.stranger],
        ])
      ).rows[0].n,
    );
  } finally {
    await cron.end();
  }
  const logs = [
    ...(await readLog(databaseUrl(serverUrl, appDatabase))),
    ...(await readLog(databaseUrl(serverUrl, cast.ownDatabase))),
  ];
  const after = await rights(serverUrl, appDatabase, cast);
  const gained = after.filter((line) => !before.includes(line));
  const succeeded =
    breaches.length +
    foreign.length +
    logs.length +
    gained.length +
    othersJobs +
    ran.filter((c) => !fixedCommands.includes(c)).length;
  tally.escalationsSucceeded += succeeded;
  tally.expectNone(`${label}: no lesser role's write went through that should not`, breaches.length, breaches);
  tally.expectNone(
    `${label}: cron.job holds only the package's fixed commands, as the installer`,
    foreign.length,
    foreign,
  );
  tally.expectNone(
    `${label}: pg_cron ran only the package's fixed commands`,
    ran.filter((c) => !fixedCommands.includes(c)).length,
    ran,
  );
  tally.expectNone(`${label}: no lesser role owns a pg_cron job`, othersJobs);
  tally.expectNone(`${label}: nothing a lesser role planted ran`, logs.length, logs);
  tally.expectNone(`${label}: no role gained a right`, gained.length, gained);
}

// ── the holes, one test each ────────────────────────────────────────────────

describe('pg_cron in another database of the server', () => {
  const serverUrl = () => inject('serverUrl');
  const cronUrl = () => databaseUrl(inject('serverUrl'), inject('cronDatabase'));
  let db: TestDatabase;
  let cast: Cast;

  beforeAll(async () => {
    db = await createTestDatabase();
    cleanups.push(async () => {
      const cron = await connect(cronUrl());
      await cron
        .query('select cron.unschedule(jobid) from cron.job where database = $1', [db.name])
        .catch(() => undefined);
      await cron.end();
      await db.drop();
    });
    await seedBookstore(db.pool);
    cast = castOf('x');
    await createCast(serverUrl(), cast, db.name);
    await migrate(db.url); // scheduled from pg_cron's database, as the installer (the superuser)
  });

  test("an admin who writes a command into the job table and unschedules it cannot make the installer's migrate run it", async () => {
    const adminUrl = asRole(db.url, cast.admin);
    const admin = await connect(adminUrl);
    tally.escalationAttempts++;
    try {
      await admin
        .query(`update order_automation.job set command = 'ALTER ROLE ${cast.admin} SUPERUSER', cron_database = null`)
        .catch(() => undefined);
    } finally {
      await admin.end();
    }
    await migrate(db.url);
    const jobs = await cronJobs(cronUrl(), db.name);
    expect(jobs.map((j) => j.command).sort()).toEqual([...fixedCommands].sort());
    const superuser = await asSuperuser((c) =>
      c.query(`select rolsuper from pg_roles where rolname = $1`, [cast.admin]),
    );
    expect(superuser.rows[0].rolsuper).toBe(false);
  });

  test("the installer's status, schedule control and migrate never read cron.job in a database an admin chose", async () => {
    const own = asRole(databaseUrl(serverUrl(), cast.ownDatabase), cast.admin);
    const builder = await connect(own);
    try {
      await builder.query(fakeCronSql(cast.admin, db.name));
    } finally {
      await builder.end();
    }
    const admin = await connect(asRole(db.url, cast.admin));
    tally.escalationAttempts++;
    try {
      await admin
        .query(`update order_automation.job set cron_database = $1`, [cast.ownDatabase])
        .catch(() => undefined);
    } finally {
      await admin.end();
    }
    const status = await getStatus(db.url);
    await pauseJob(db.url, 'confirm_shipped_orders');
    await resumeJob(db.url, 'confirm_shipped_orders');
    await migrate(db.url);
    expect(await readLog(databaseUrl(serverUrl(), cast.ownDatabase))).toEqual([]);
    const superuser = await asSuperuser((c) =>
      c.query(`select rolsuper from pg_roles where rolname = $1`, [cast.admin]),
    );
    expect(superuser.rows[0].rolsuper).toBe(false);
    expect(status.jobs.every((j) => j.cronDatabase === inject('cronDatabase'))).toBe(true);
  });

  test('the app role cannot record payment_timeout or receipt_timeout, by set_order_state or by the cause setting', async () => {
    const appUrl = asRole(db.url, cast.app);
    await placeOrder(appUrl, {
      orderId: 'forge1',
      userId: 'buyer1',
      storeId: 'store1',
      items: [{ bookId: 'book1', count: 1, price: 1 }],
    });
    await placeOrder(appUrl, {
      orderId: 'forge2',
      userId: 'buyer1',
      storeId: 'store1',
      items: [{ bookId: 'book1', count: 1, price: 1 }],
    });
    const app = await connect(appUrl);
    tally.escalationAttempts += 2;
    try {
      const first = await app
        .query(`select order_automation.set_order_state('forge1', 4::smallint, 'payment_timeout')`)
        .then(
          () => undefined,
          (e: { code?: string }) => e.code,
        );
      await app.query('begin');
      const second = await app
        .query(`select set_config('order_automation.cause', 'receipt_timeout', true)`)
        .then(() => app.query(`update new_order set state = 4 where order_id = 'forge2'`))
        .then(
          () => undefined,
          (e: { code?: string }) => e.code,
        );
      await app.query('rollback');
      expect([first, second]).toEqual(['42501', '42501']);
    } finally {
      await app.end();
    }
    const forged = await db.pool.query(
      `select count(*)::int n from order_automation.order_event where order_id in ('forge1', 'forge2') and cause like '%_timeout'`,
    );
    expect(forged.rows[0].n).toBe(0);
    expect((await db.pool.query(`select state from new_order where order_id in ('forge1', 'forge2')`)).rows).toEqual([
      { state: 0 },
      { state: 0 },
    ]);
  });

  test('every write the app and admin roles may make, then the installer migrates, reads the status, pauses and resumes, and pg_cron ticks: it only ever runs the fixed commands, and no role gains a right', async () => {
    const before = await rights(serverUrl(), db.name, cast);
    const breaches: string[] = [];
    await attack(serverUrl(), cronUrl(), db.name, cast, breaches, false);
    await migrate(db.url);
    await getStatus(db.url);
    await pauseJob(db.url, 'purge_history');
    await resumeJob(db.url, 'purge_history');
    await setSchedule(db.url, 'cancel_expired_orders', { schedule: '* * * * *' });
    await dueOrders(db.url, 'tick');
    expect(await waitForTick(db.url, 'tick')).toEqual({ cancelled: true, confirmed: true });
    await verdict({
      label: 'another database',
      serverUrl: serverUrl(),
      cronUrl: cronUrl(),
      appDatabase: db.name,
      cast,
      installer: 'postgres',
      before,
      breaches,
    });
    // And the installer's down, which reaches pg_cron's database too (confirmed: the shop holds rows).
    await migrate(db.url, { direction: 'down', confirm: true });
    expect(await cronJobs(cronUrl(), db.name)).toEqual([]);
    const logs = [...(await readLog(db.url)), ...(await readLog(databaseUrl(serverUrl(), cast.ownDatabase)))];
    const superusers = await asSuperuser((c) =>
      c.query(`select rolname from pg_roles where rolsuper and rolname = any ($1)`, [
        [cast.app, cast.admin, cast.stranger],
      ]),
    );
    tally.escalationsSucceeded += logs.length + superusers.rows.length;
    tally.expectNone(
      'down: nothing a lesser role planted ran, and no role became superuser',
      logs.length + superusers.rows.length,
      logs,
    );
  }, 150_000);
});

describe('pg_cron in this database', () => {
  let server: OwnServer;
  let cast: Cast;
  const shop = 'postgres'; // the own server's cron database: the package is installed there

  beforeAll(async () => {
    server = await ownServer();
    cleanups.push(() => server.stop());
    await migrate(server.url);
    const pool = new pg.Pool({ connectionString: server.url, max: 2 });
    try {
      await seedBookstore(pool);
    } finally {
      await pool.end();
    }
    cast = castOf('h');
    await createCast(server.url, cast, shop);
  }, 120_000);

  test("the admin role pauses, resumes and reschedules the installer's own pg_cron job with no right on schema cron; OA011 when the job is missing", async () => {
    const adminUrl = asRole(server.url, cast.admin);
    const installerJob = async (job: string) =>
      (await cronJobs(server.url, shop)).find((j) => j.jobname === `order_automation.${job}@${shop}`);
    await pauseJob(adminUrl, 'purge_cancelled_orders');
    expect(await installerJob('purge_cancelled_orders')).toMatchObject({ active: false, username: 'postgres' });
    await setSchedule(adminUrl, 'purge_cancelled_orders', { schedule: '*/3 * * * *' });
    await resumeJob(adminUrl, 'purge_cancelled_orders');
    expect(await installerJob('purge_cancelled_orders')).toMatchObject({ active: true, schedule: '*/3 * * * *' });
    const mine = await cronJobs(server.url, shop);
    expect(mine.filter((j) => j.username !== 'postgres')).toEqual([]);
    expect(mine).toHaveLength(4);
    // A job gone from pg_cron: pause/resume say so, status says missing, migrate brings it back as it was.
    await pauseJob(adminUrl, 'purge_cancelled_orders');
    const owner = await connect(server.url);
    try {
      await owner.query(`select cron.unschedule('order_automation.purge_cancelled_orders@${shop}')`);
    } finally {
      await owner.end();
    }
    await expect(resumeJob(adminUrl, 'purge_cancelled_orders')).rejects.toBeInstanceOf(PgCronJobMissingError);
    expect((await getStatus(adminUrl)).jobs.find((j) => j.job === 'purge_cancelled_orders')).toMatchObject({
      pgCron: 'missing',
      active: false,
    });
    await migrate(server.url);
    expect(await installerJob('purge_cancelled_orders')).toMatchObject({ active: false, schedule: '*/3 * * * *' });
    await resumeJob(adminUrl, 'purge_cancelled_orders');
    await setSchedule(adminUrl, 'purge_cancelled_orders', { schedule: '* * * * *' });
    expect((await getStatus(adminUrl)).jobs.every((j) => j.pgCron === 'active')).toBe(true);
  });

  test('every write the app and admin roles may make, then the installer migrates, reads the status, pauses and resumes, and pg_cron ticks: it only ever runs the fixed commands, and no role gains a right', async () => {
    const before = await rights(server.url, shop, cast);
    const breaches: string[] = [];
    await attack(server.url, server.url, shop, cast, breaches, true);
    await migrate(server.url);
    await getStatus(server.url);
    await pauseJob(server.url, 'purge_history');
    await resumeJob(server.url, 'purge_history');
    await dueOrders(server.url, 'tick');
    expect(await waitForTick(server.url, 'tick')).toEqual({ cancelled: true, confirmed: true });
    await verdict({
      label: 'this database',
      serverUrl: server.url,
      cronUrl: server.url,
      appDatabase: shop,
      cast,
      installer: 'postgres',
      before,
      breaches,
    });
  }, 150_000);
});
