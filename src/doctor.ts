// `doctor`: is this database ready for the package, and is the package running as it should? It
// checks pg_cron (on the server, preloaded, in which database, the extension), the installing role's
// privileges, the install itself, the jobs in pg_cron against the package's job table, and the
// settings; every problem comes with the exact lines to run. It only reads (a probe it needs runs in
// a transaction it rolls back), on connections of its own, as whatever role it is given: what that
// role may not see is said, never guessed.
import { readdirSync } from 'node:fs';
import pg from 'pg';
import { nextFireTime } from './cron.js';
import { type Db, sameServer } from './db.js';
import { toOrderAutomationError } from './errors.js';
import { migrationsDir, migrationsTable } from './migrate.js';
import {
  cronFindings,
  type Finding,
  type Fix,
  ident,
  installFindings,
  readSettingsFinding,
  roleFacts,
  rolesWarning,
} from './preflight.js';
import { getSettings } from './settings.js';
import { jobs as jobList, type JobName, orderStates, stateCodeKey } from './types.js';

export type DoctorStatus = 'ok' | 'note' | 'problem';

export interface DoctorCheck {
  /** Stable name of the check, e.g. 'pg_cron.loaded', 'privilege.cron.alter_job', 'jobs.missing'. */
  id: string;
  /** ok: as it should be; note: worth knowing, nothing to fix; problem: something to fix (see `fix`). */
  status: DoctorStatus;
  summary: string;
  /** For a problem: the exact lines to run, and where. */
  fix?: Fix;
}

export interface DoctorReport {
  /** True when no check found a problem. */
  ok: boolean;
  database: string;
  /** The role doctor connected as. */
  role: string;
  /** The role that installed the package (owner of schema order_automation), or, before an install, the one connected. */
  installer: string;
  pgCron: {
    /** Version of pg_cron on the server (its library); null when it is not installed. */
    version: string | null;
    /** Whether the server preloads it; null when this role can tell neither way. */
    loaded: boolean | null;
    /** The database it runs in (cron.database_name); null when unknown. */
    database: string | null;
  };
  checks: DoctorCheck[];
}

export interface DoctorOptions {
  /** false: the package is meant to run without pg_cron (migrate --no-schedule); its checks are left out. Default true. */
  schedule?: boolean;
}

interface Basics {
  database: string;
  role: string;
  superuser: boolean;
  major: number;
  available: string | null;
  extensionHere: string | null;
  installedBy: string | null;
  readsSettings: boolean;
  preload: string | null;
  cronSetting: string | null;
}

async function basics(client: pg.Client): Promise<Basics> {
  const { rows } = await client.query<Basics>(`
    select pg_catalog.current_database()::text as database, current_user::text as role,
           (select r.rolsuper from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) current_user) as superuser,
           pg_catalog.current_setting('server_version_num')::int / 10000 as major,
           (select x.default_version from pg_catalog.pg_available_extensions x where x.name operator(pg_catalog.=) 'pg_cron') as available,
           (select e.extversion from pg_catalog.pg_extension e where e.extname operator(pg_catalog.=) 'pg_cron') as "extensionHere",
           (select pg_catalog.pg_get_userbyid(n.nspowner)::text from pg_catalog.pg_namespace n
             where n.nspname operator(pg_catalog.=) 'order_automation') as "installedBy",
           pg_catalog.pg_has_role(current_user, 'pg_read_all_settings', 'USAGE') as "readsSettings",
           -- pg_settings shows these two only to superusers and members of pg_read_all_settings.
           (select s.setting from pg_catalog.pg_settings s where s.name operator(pg_catalog.=) 'shared_preload_libraries') as preload,
           (select s.setting from pg_catalog.pg_settings s
             where s.name operator(pg_catalog.=) 'cron.database_name' and s.context operator(pg_catalog.=) 'postmaster') as "cronSetting"`);
  return rows[0]!;
}

/**
 * Whether pg_cron is preloaded, asked without reading any setting: a parameter pg_cron defines at
 * server start cannot be set in a session, a placeholder can.
 */
async function preloadedByProbe(client: pg.Client): Promise<boolean> {
  await client.query('begin');
  try {
    await client.query(`select pg_catalog.set_config('cron.database_name', 'order_automation_doctor_probe', true)`);
    return false;
  } catch (error) {
    if ((error as { code?: string }).code === '55P02') return true;
    throw error;
  } finally {
    await client.query('rollback');
  }
}

async function connect(db: Db, database?: string): Promise<pg.Client> {
  const config = sameServer(db, database);
  const client = new pg.Client({
    ...config,
    connectionTimeoutMillis: 10_000,
    application_name: 'order_automation_doctor',
  });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** Runs `work` on a connection to another database of the server; null when it cannot be reached. */
async function inDatabase<T>(db: Db, database: string, work: (client: pg.Client) => Promise<T>): Promise<T | null> {
  let client: pg.Client;
  try {
    client = await connect(db, database);
  } catch {
    return null;
  }
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Where the pg_cron extension is created, looked for database by database (for a role that may not read cron.database_name). */
async function findCronDatabase(db: Db, client: pg.Client): Promise<string | null> {
  const { rows } = await client.query<{ datname: string }>(`
    select d.datname::text as datname from pg_catalog.pg_database d
     where d.datallowconn and not d.datistemplate and pg_catalog.has_database_privilege(d.datname, 'CONNECT')
     order by d.datname operator(pg_catalog.<>) 'postgres', d.datname limit 50`);
  for (const { datname } of rows) {
    const found = await inDatabase(db, datname, async (other) => {
      const ext = await other.query(
        `select from pg_catalog.pg_extension where extname operator(pg_catalog.=) 'pg_cron'`,
      );
      return ext.rowCount === 1;
    });
    if (found) return datname;
  }
  return null;
}

/** The migrations the package ships, by name (what an up-to-date install has applied). */
function shippedMigrations(): string[] {
  return readdirSync(migrationsDir)
    .filter((f) => /^\d{4}_\w+\.ts$/.test(f))
    .sort()
    .map((f) => f.replace(/\.ts$/, ''));
}

const literal = (text: string) => `'${text.replaceAll("'", "''")}'`;

interface PackageJob {
  job: JobName;
  schedule: string;
  active: boolean;
  /** The command pg_cron must run (null when this role may not ask). */
  command: string | null;
  cron_database: string | null;
  jobname: string;
}

interface CronJob {
  jobid: string;
  jobname: string;
  schedule: string;
  command: string;
  database: string;
  username: string;
  active: boolean;
  last_status: string | null;
  last_message: string | null;
}

/** Checks a database for the package; see DoctorReport. Never changes anything. */
export async function doctor(db: Db, options: DoctorOptions = {}): Promise<DoctorReport> {
  const schedule = options.schedule ?? true;
  let client: pg.Client;
  try {
    client = await connect(db);
  } catch (error) {
    throw toOrderAutomationError(error);
  }
  try {
    return await examine(db, client, schedule);
  } catch (error) {
    throw toOrderAutomationError(error);
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function examine(db: Db, client: pg.Client, schedule: boolean): Promise<DoctorReport> {
  const checks: DoctorCheck[] = [];
  const ok = (id: string, summary: string) => checks.push({ id, status: 'ok', summary });
  const note = (id: string, summary: string, fix?: Fix) => checks.push({ id, status: 'note', summary, fix });
  const problem = (finding: Finding) => checks.push({ status: 'problem', ...finding });

  const b = await basics(client);
  const installer = b.installedBy ?? b.role;
  const readable = b.superuser || b.readsSettings;
  const report = (loaded: boolean | null, database: string | null): DoctorReport => ({
    ok: !checks.some((c) => c.status === 'problem'),
    database: b.database,
    role: b.role,
    installer,
    pgCron: { version: b.available, loaded, database },
    checks,
  });
  const superuser = 'as a superuser';
  const conf = (lines: string[]): Fix => ({ where: 'in postgresql.conf, then restart the server', lines });

  // pg_cron on the server, preloaded, and where.
  let loaded: boolean | null = null;
  let cronDb: string | null = null;
  if (schedule) {
    if (b.available === null) {
      problem({
        id: 'pg_cron.available',
        summary: 'pg_cron is not installed on this PostgreSQL server',
        fix: {
          where:
            'on the server (Debian/Ubuntu; elsewhere, your provider enables it), then in postgresql.conf, then restart the server',
          lines: [
            `apt-get install postgresql-${b.major}-cron`,
            `shared_preload_libraries = 'pg_cron'`,
            `cron.database_name = ${literal(b.database)}`,
          ],
        },
      });
      return report(false, null);
    }
    ok('pg_cron.available', `pg_cron ${b.available} is installed on the server`);

    if (b.preload !== null) {
      const libraries = b.preload
        .split(',')
        .map((l) => l.trim().replace(/^"|"$/g, ''))
        .filter(Boolean);
      loaded = libraries.includes('pg_cron');
      if (loaded) ok('pg_cron.loaded', `pg_cron is preloaded (shared_preload_libraries = ${literal(b.preload)})`);
      else {
        problem({
          id: 'pg_cron.loaded',
          summary: `pg_cron is not preloaded (shared_preload_libraries = ${literal(b.preload)}), so it runs no job`,
          fix: conf([
            `shared_preload_libraries = ${literal([...libraries, 'pg_cron'].join(','))}`,
            `cron.database_name = ${literal(b.database)}`,
          ]),
        });
        return report(false, null);
      }
    } else {
      loaded = await preloadedByProbe(client);
      if (loaded) {
        ok(
          'pg_cron.loaded',
          `pg_cron is preloaded (told by its parameters; role "${b.role}" may not read shared_preload_libraries)`,
        );
      } else {
        problem({
          id: 'pg_cron.loaded',
          summary: 'pg_cron is not preloaded (its parameters are unknown to the server), so it runs no job',
          fix: conf([`shared_preload_libraries = 'pg_cron'  # added to the libraries already listed`]),
        });
        return report(false, null);
      }
    }

    cronDb = b.cronSetting ?? (b.extensionHere !== null ? b.database : null);
    if (cronDb === null) cronDb = await findCronDatabase(db, client);
    if (cronDb === null) {
      problem({
        id: 'pg_cron.database',
        summary: `cannot tell which database pg_cron runs in: role "${b.role}" may not read cron.database_name, and no database it may connect to has the pg_cron extension`,
        fix: { where: superuser, lines: [`GRANT pg_read_all_settings TO ${ident(b.role)};`] },
      });
      return report(loaded, null);
    }
    const how =
      b.cronSetting !== null
        ? 'cron.database_name'
        : readable
          ? 'its extension'
          : 'its extension; this role may not read cron.database_name';
    ok(
      'pg_cron.database',
      cronDb === b.database
        ? `pg_cron runs in this database (${how}): the jobs are scheduled here`
        : `pg_cron runs in database "${cronDb}" (${how}): the jobs of "${b.database}" are scheduled from there with cron.schedule_in_database`,
    );
  }

  // pg_cron's extension in its database, and what the installer may do there.
  const placement = cronDb === b.database ? 'here' : 'elsewhere';
  let cronVisible = false;
  if (schedule && cronDb !== null) {
    const cronSide = async (cron: pg.ClientBase) => {
      const ext = await cron.query<{ version: string }>(
        `select extversion as version from pg_catalog.pg_extension where extname operator(pg_catalog.=) 'pg_cron'`,
      );
      return { version: ext.rows[0]?.version ?? null, findings: await cronFindings(cron, installer, placement) };
    };
    const side = cronDb === b.database ? await cronSide(client) : await inDatabase(db, cronDb, cronSide);
    if (side === null) {
      problem({
        id: 'pg_cron.connect',
        summary: `cannot connect to database "${cronDb}", where pg_cron runs, as role "${b.role}"`,
        fix: {
          where: `as the owner of database "${cronDb}" or a superuser`,
          lines: [`GRANT CONNECT ON DATABASE ${ident(cronDb)} TO ${ident(b.role)};`],
        },
      });
    } else if (side.version === null) {
      const fix = { where: `in database "${cronDb}", ${superuser}`, lines: ['CREATE EXTENSION pg_cron;'] };
      if (b.superuser && cronDb === b.database && b.installedBy === null) {
        note('pg_cron.extension', 'the pg_cron extension is not created yet: migrate creates it (you are a superuser)');
      } else {
        problem({
          id: 'pg_cron.extension',
          summary: `the pg_cron extension is not created in database "${cronDb}"`,
          fix,
        });
      }
    } else {
      // Without USAGE on schema cron its jobs cannot be read: that finding says what to grant.
      cronVisible = !side.findings.some((f) => f.id === 'privilege.cron-schema');
      if (side.version !== b.available) {
        note(
          'pg_cron.extension',
          `the pg_cron extension in "${cronDb}" is version ${side.version}; the server has ${b.available}`,
          {
            where: `in database "${cronDb}", ${superuser}`,
            lines: ['ALTER EXTENSION pg_cron UPDATE;'],
          },
        );
      } else ok('pg_cron.extension', `the pg_cron extension ${side.version} is created in "${cronDb}"`);
      for (const finding of side.findings.filter((f) => f.id !== 'pg_cron.extension')) problem(finding);
      if (side.findings.length === 0) {
        ok(
          'privilege.cron',
          `role "${installer}" may schedule, change and remove its jobs in "${cronDb}"${b.installedBy === null ? '' : ' (it installed the package)'}`,
        );
      }
    }
  }

  // The installing role's own rights.
  const facts = await roleFacts(client, installer);
  if (schedule && !facts.superuser && cronDb !== null && cronDb !== b.database) {
    // pg_cron's extension in this database tells migrate where pg_cron runs without reading any
    // setting; in the other placement it reads cron.database_name, which needs this.
    const readsSettings =
      b.installedBy === null || b.installedBy === b.role
        ? b.readsSettings
        : (
            await client.query<{ reads: boolean }>(
              `select pg_catalog.pg_has_role($1::name, 'pg_read_all_settings', 'USAGE') as reads`,
              [installer],
            )
          ).rows[0]!.reads;
    if (!readsSettings) problem(readSettingsFinding(installer, b.database));
  }
  if (facts.superuser) ok('privilege.install', `role "${installer}" is a superuser`);
  else if (!facts.installed) {
    const findings = installFindings(facts, b.database);
    findings.forEach(problem);
    if (findings.length === 0)
      ok('privilege.install', `role "${installer}" may install the package into "${b.database}"`);
  }
  const rolesFinding = rolesWarning(facts);
  if (facts.rolesExist.every(Boolean)) ok('roles', 'the roles order_automation_app and order_automation_admin exist');
  else if (!facts.installed) {
    if (rolesFinding) problem(rolesFinding);
    else
      note(
        'roles',
        'the roles order_automation_app and order_automation_admin do not exist yet: the install creates them',
      );
  } else {
    // Installed without them: the privileges file creates them and grants them their rights, as the installer.
    problem({
      id: 'roles',
      summary: `the roles order_automation_app and order_automation_admin do not exist: nothing of the package is granted to roles other than "${installer}"`,
      fix: {
        where: `${rolesFinding ? 'as a superuser, then ' : ''}in a shell, as role "${installer}"`,
        lines: [
          ...(rolesFinding ? rolesFinding.fix.lines : []),
          `psql "$DATABASE_URL" -f node_modules/order-automation/sql/600_privileges.sql`,
        ],
      },
    });
  }

  // The install itself.
  const migrate = `npx order-automation migrate${schedule ? '' : ' --no-schedule'}`;
  const asInstaller = { where: `in a shell, as role "${installer}"` };
  if (b.installedBy === null) {
    problem({
      id: 'package.installed',
      summary: `order-automation is not installed in "${b.database}"`,
      fix: { ...asInstaller, lines: [migrate] },
    });
    return report(loaded, cronDb);
  }
  const applied = await client
    .query<{ name: string }>(`select name from public.${migrationsTable} order by run_on, id`)
    .then((r) => r.rows.map((row) => row.name))
    .catch(() => null);
  const pending = applied === null ? null : shippedMigrations().filter((m) => !applied.includes(m));
  if (pending === null) {
    problem({
      id: 'package.installed',
      summary: `role "${b.role}" may not read public.${migrationsTable}, so the install cannot be checked`,
      fix: {
        where: 'in a shell',
        lines: [`npx order-automation doctor --database-url <a URL for role "${installer}">`],
      },
    });
  } else if (pending.length > 0) {
    problem({
      id: 'package.installed',
      summary: `order-automation is installed, but ${pending.length === 1 ? 'migration' : 'migrations'} ${pending.join(', ')} of this version ${pending.length === 1 ? 'is' : 'are'} not applied`,
      fix: { ...asInstaller, lines: [migrate] },
    });
  } else
    ok(
      'package.installed',
      `order-automation is installed and up to date (${applied!.at(-1)}), by role "${installer}"`,
    );

  // The jobs: the package's table against pg_cron's.
  const packageJobs = await client
    .query<PackageJob>(
      // pg_cron must run each job's fixed command (job_command); a role that may not call it
      // (jobs are checked only as the installer or a superuser) reads the rest.
      `select j.job, j.schedule, j.active, j.cron_database, order_automation.cron_jobname(j.job) as jobname,
              case when pg_catalog.has_function_privilege('order_automation.job_command(text)', 'EXECUTE')
                   then order_automation.job_command(j.job) end as command
         from order_automation.job j order by j.job`,
    )
    .then((r) => r.rows)
    .catch(() => null);
  if (packageJobs === null) {
    problem({
      id: 'jobs.readable',
      summary: `role "${b.role}" may not read the package's job list (order_automation.job)`,
      fix: {
        where: 'in a shell',
        lines: [`npx order-automation doctor --database-url <a URL for role "${installer}">`],
      },
    });
  } else if (schedule && cronDb !== null && cronVisible) {
    await checkJobs(db, client, { b, installer, cronDb, packageJobs, ok, note, problem });
  } else if (!schedule) {
    note(
      'jobs',
      'checked without pg_cron (--no-schedule): run the jobs yourself, e.g. npx order-automation run cancel',
    );
  }

  // The settings.
  const settings = await getSettings(client).catch(() => null);
  if (settings === null) {
    problem({
      id: 'settings',
      summary: `role "${b.role}" may not read order_automation.settings`,
      fix: {
        where: 'as a superuser, or run doctor as the installer',
        lines: [`GRANT order_automation_admin TO ${ident(b.role)};`],
      },
    });
  } else {
    ok(
      'settings',
      `payment_timeout ${settings.paymentTimeout}, receipt_timeout ${settings.receiptTimeout}, batch_size ${settings.batchSize}, max_run_time ${settings.maxRunTime}, bookkeeping ${settings.bookkeeping}` +
        // An adopted app's own state codes are worth seeing next to the rest; the defaults are not.
        (orderStates.every((state, i) => settings[stateCodeKey(state)] === i)
          ? ''
          : `, state codes ${orderStates.map((state) => `${state} ${settings[stateCodeKey(state)]}`).join(', ')}`),
    );
    const maxRun = (
      await client.query<{ seconds: number }>(
        'select extract(epoch from max_run_time)::float8 as seconds from order_automation.settings',
      )
    ).rows[0]!.seconds;
    for (const job of (packageJobs ?? []).filter((j) => jobList[j.job]?.dueOrders)) {
      const first = nextFireTime(job.schedule);
      const second = first && nextFireTime(job.schedule, first);
      const period = first && second ? (second.getTime() - first.getTime()) / 1000 : null;
      if (period !== null && maxRun >= period) {
        note(
          'settings.max_run_time',
          `max_run_time (${settings.maxRunTime}) is not shorter than the ${period} s between runs of ${job.job}: a long run makes pg_cron skip the next`,
          {
            where: 'in a shell',
            lines: [
              `npx order-automation settings set max_run_time='${Math.max(1, Math.floor(period * 0.8))} seconds'`,
            ],
          },
        );
      }
    }
  }
  return report(loaded, cronDb);
}

async function checkJobs(
  db: Db,
  client: pg.Client,
  context: {
    b: Basics;
    installer: string;
    cronDb: string;
    packageJobs: PackageJob[];
    ok: (id: string, summary: string) => void;
    note: (id: string, summary: string, fix?: Fix) => void;
    problem: (finding: Finding) => void;
  },
): Promise<void> {
  const { b, installer, cronDb, packageJobs, ok, note, problem } = context;
  const here = cronDb === b.database;
  const unscheduled = packageJobs.filter((j) => j.cron_database === null);
  if (unscheduled.length > 0) {
    problem({
      id: 'jobs.unscheduled',
      summary: `${unscheduled.map((j) => j.job).join(', ')} ${unscheduled.length === 1 ? 'is' : 'are'} not scheduled in pg_cron (installed with --no-schedule, or before pg_cron was ready)`,
      fix: { where: `in a shell, as role "${installer}"`, lines: ['npx order-automation migrate'] },
    });
  }
  const scheduled = packageJobs.filter((j) => j.cron_database !== null);
  if (scheduled.length === 0) return;
  // pg_cron shows each role only its own jobs, unless it is a superuser.
  if (!b.superuser && b.role !== installer) {
    problem({
      id: 'jobs.visible',
      summary: `pg_cron shows role "${b.role}" only its own jobs, and the package's belong to "${installer}": they cannot be checked from here`,
      fix: {
        where: 'in a shell',
        lines: [`npx order-automation doctor --database-url <a URL for role "${installer}">`],
      },
    });
    return;
  }
  const suffix = `@${b.database}`;
  const read = async (cron: pg.ClientBase) =>
    (
      await cron.query<CronJob>(
        `select j.jobid::text as jobid, j.jobname, j.schedule, j.command, j.database, j.username, j.active,
                d.status as last_status, d.return_message as last_message
           from cron.job j
           left join lateral (select r.status, r.return_message from cron.job_run_details r
                               where r.jobid operator(pg_catalog.=) j.jobid and r.status operator(pg_catalog.<>) 'running'
                               order by r.runid desc limit 1) d on true
          where pg_catalog.starts_with(j.jobname, 'order_automation.')
            and pg_catalog."right"(j.jobname, pg_catalog.char_length($1)) operator(pg_catalog.=) $1
          order by j.jobname`,
        [suffix],
      )
    ).rows;
  let cronJobs: CronJob[] | null;
  try {
    cronJobs = here ? await read(client) : await inDatabase(db, cronDb, read);
  } catch (error) {
    problem({
      id: 'jobs.visible',
      summary: `cannot read pg_cron's jobs in "${cronDb}": ${(error as Error).message}`,
      fix: {
        where: 'in a shell',
        lines: [`npx order-automation doctor --database-url <a URL for role "${installer}">`],
      },
    });
    return;
  }
  if (cronJobs === null) return; // cannot connect: reported above
  const where = `in database "${cronDb}", as role "${installer}"`;
  const alias = (job: JobName) => jobList[job]?.alias ?? job;
  let fine = 0;
  for (const job of scheduled) {
    const found = cronJobs.find((c) => c.jobname === job.jobname);
    if (!found) {
      problem({
        id: 'jobs.missing',
        summary: `${job.job} is recorded as scheduled, but pg_cron has no job ${job.jobname}: it does not run`,
        // migrate re-creates every missing job too (a paused one paused), as the installer.
        fix:
          job.command === null
            ? { where: `in a shell, as role "${installer}"`, lines: ['npx order-automation migrate'] }
            : {
                where,
                lines: [
                  here
                    ? `SELECT cron.schedule(${literal(job.jobname)}, ${literal(job.schedule)}, ${literal(job.command)});`
                    : `SELECT cron.schedule_in_database(${literal(job.jobname)}, ${literal(job.schedule)}, ${literal(job.command)}, ${literal(b.database)});`,
                ],
              },
      });
      continue;
    }
    let troubles = 0;
    if (found.username !== installer) {
      troubles++;
      problem({
        id: 'jobs.owner',
        summary: `pg_cron runs ${job.job} as role "${found.username}", not as "${installer}", which installed the package`,
        fix: {
          where: `in database "${cronDb}", as a superuser`,
          lines: [`SELECT cron.alter_job(${found.jobid}, username => ${literal(installer)});`],
        },
      });
    }
    if (found.database !== b.database) {
      troubles++;
      problem({
        id: 'jobs.database',
        summary: `pg_cron runs ${job.job} in database "${found.database}", not in "${b.database}"`,
        fix: {
          where: `in database "${cronDb}", as a superuser`,
          lines: [`SELECT cron.alter_job(${found.jobid}, database => ${literal(b.database)});`],
        },
      });
    }
    if (job.command !== null && found.command !== job.command) {
      troubles++;
      problem({
        id: 'jobs.command',
        summary: `pg_cron runs ${literal(found.command)} for ${job.job}, not the package's ${literal(job.command)}`,
        fix: { where, lines: [`SELECT cron.alter_job(${found.jobid}, command => ${literal(job.command)});`] },
      });
    }
    if (found.schedule !== job.schedule) {
      troubles++;
      problem({
        id: 'jobs.schedule',
        summary: `pg_cron runs ${job.job} on ${literal(found.schedule)}, the package records ${literal(job.schedule)}`,
        fix: {
          where: `in a shell, as role "${installer}" or an admin`,
          lines: [`npx order-automation schedule set ${alias(job.job)} ${literal(job.schedule)}`],
        },
      });
    }
    if (found.active !== job.active) {
      troubles++;
      problem({
        id: 'jobs.active',
        summary: `${job.job} is ${found.active ? 'active' : 'paused'} in pg_cron but recorded as ${job.active ? 'active' : 'paused'}`,
        fix: {
          where: `in a shell, as role "${installer}" or an admin`,
          lines: [`npx order-automation schedule ${job.active ? 'resume' : 'pause'} ${alias(job.job)}`],
        },
      });
    } else if (!job.active) {
      note('jobs.paused', `${job.job} is paused`, {
        where: 'to resume it, in a shell',
        lines: [`npx order-automation schedule resume ${alias(job.job)}`],
      });
    }
    if (found.last_status === 'failed') {
      troubles++;
      problem({
        id: 'jobs.last-run',
        summary: `the last run of ${job.job} failed in pg_cron: ${found.last_message ?? 'no message'}`,
        fix: {
          where: `to see its runs, in database "${cronDb}"`,
          lines: [
            `SELECT start_time, status, return_message FROM cron.job_run_details WHERE jobid = ${found.jobid} ORDER BY runid DESC LIMIT 10;`,
          ],
        },
      });
    }
    if (troubles === 0) fine++;
  }
  for (const extra of cronJobs.filter((c) => !packageJobs.some((j) => j.jobname === c.jobname))) {
    problem({
      id: 'jobs.unknown',
      summary: `pg_cron has a job ${extra.jobname} (runs ${literal(extra.command)}) that is not one of the package's jobs`,
      fix: {
        where: `in database "${cronDb}", as role "${extra.username}" or a superuser`,
        lines: [`SELECT cron.unschedule(${extra.jobid});`],
      },
    });
  }
  if (fine === scheduled.length && fine > 0) {
    ok('jobs', `pg_cron has the ${fine} jobs, as recorded, run by role "${installer}" in "${b.database}"`);
  }
}
