// Installing the package: node-pg-migrate runs the migrations under a package-specific advisory
// lock, all in one transaction; pg_cron jobs are scheduled here, or from pg_cron's own database.
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { runner } from 'node-pg-migrate';
import { type Db, withClient, withDatabase } from './db.js';
import { OrderAutomationError, PgCronUnavailableError, toOrderAutomationError } from './errors.js';
import { confirmDown, installPreflight } from './migrate-checks.js';

export const migrationsDir = fileURLToPath(new URL('../migrations', import.meta.url));
export const migrationsTable = 'order_automation_migrations';
/** Our own advisory lock: an app's node-pg-migrate (default lock) never waits on ours. */
const lockValue = 4_242_001_002;

export interface MigrateOptions {
  /** 'up' (default) applies every pending migration; 'down' reverts `count` (default: all). */
  direction?: 'up' | 'down';
  count?: number;
  /** false installs without pg_cron jobs: you then call the procedures yourself. Default true. */
  schedule?: boolean;
  /** Lines worth telling: jobs scheduled elsewhere, warnings (default: silent). */
  log?: (line: string) => void;
  /** Also node-pg-migrate's own lines (the migrations run; on a failure, the SQL that failed) to `log`. */
  verbose?: boolean;
  /** `down` drops the bookstore's tables and the order history: when they hold rows, only with confirm: true. */
  confirm?: boolean;
}

export interface MigrateResult {
  /** Names of the migrations applied (or reverted) by this call; empty when there was nothing to do. */
  migrations: string[];
  /** Where the pg_cron jobs run: this database's name, pg_cron's database, or null (no schedule). */
  scheduledIn: string | null;
  /** What went on despite a problem, e.g. the package's roles not created for lack of CREATEROLE (also told to `log`). */
  warnings: string[];
}

interface CronPlace {
  current: string;
  cronDatabase: string | null;
  loaded: boolean;
}

async function cronPlace(client: pg.ClientBase): Promise<CronPlace> {
  const { rows } = await client.query<CronPlace>(`
    select current_database() as current,
           current_setting('cron.database_name', true) as "cronDatabase",
           'pg_cron' = any (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ',')) as loaded`);
  return rows[0]!;
}

/** Checks before anything is applied that we may schedule from pg_cron's database. */
async function checkCronDatabase(db: Db, place: CronPlace): Promise<void> {
  const cronDb = place.cronDatabase!;
  const advice = `pg_cron runs in database "${cronDb}" (cron.database_name), not in "${place.current}": the jobs are scheduled from there with cron.schedule_in_database`;
  try {
    const { rows } = await withDatabase(db, cronDb, (client) =>
      client.query<{ installed: boolean; allowed: boolean }>(`
      select exists (select from pg_extension where extname = 'pg_cron') as installed,
             coalesce(has_function_privilege(to_regprocedure('cron.schedule_in_database(text,text,text,text,text,boolean)'), 'execute'), false) as allowed`),
    );
    if (!rows[0]!.installed) {
      throw new PgCronUnavailableError(
        `${advice}, but the pg_cron extension is not created there. Run CREATE EXTENSION pg_cron in "${cronDb}", or migrate with --no-schedule.`,
      );
    }
    if (!rows[0]!.allowed) {
      throw new PgCronUnavailableError(
        `${advice}, and this role may not call it. As a superuser in "${cronDb}": GRANT USAGE ON SCHEMA cron TO <role>; GRANT EXECUTE ON FUNCTION cron.schedule_in_database(text,text,text,text,text,boolean) TO <role>; or migrate with --no-schedule.`,
      );
    }
  } catch (error) {
    if (error instanceof PgCronUnavailableError) throw error;
    throw new PgCronUnavailableError(`${advice}, and connecting there failed: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** Applies (or reverts) the package's migrations; see MigrateOptions. Safe to run twice or concurrently. */
export async function migrate(db: Db, options: MigrateOptions = {}): Promise<MigrateResult> {
  const { direction = 'up', schedule = true, log } = options;
  // node-pg-migrate's lines (and, on a failure, the whole SQL that failed) only when asked for.
  const quiet = () => undefined;
  const npm = options.verbose ? (log ?? quiet) : quiet;
  const logger = { debug: quiet, info: npm, warn: npm, error: npm };
  return withClient(db, async (client) => {
    const place = await cronPlace(client);
    const external = schedule && place.loaded && place.cronDatabase !== null && place.cronDatabase !== place.current;

    if (direction === 'down') {
      await confirmDown(client, { count: options.count, confirm: options.confirm === true });
      // Jobs scheduled from pg_cron's database must be removed from there; the migration removes local ones.
      const remote = await client
        .query<{ jobname: string; cron_database: string }>(
          `
        select order_automation.cron_jobname(job) as jobname, cron_database from order_automation.job
         where cron_database <> current_database()`,
        )
        .catch(() => ({ rows: [] }));
      for (const { jobname, cron_database } of remote.rows) {
        await withDatabase(db, cron_database, async (cron) => {
          await cron.query('select cron.unschedule(jobid) from cron.job where jobname = $1', [jobname]);
        });
      }
    } else if (external) {
      await checkCronDatabase(db, place);
    }
    const warnings: string[] = [];
    if (direction === 'up') {
      warnings.push(
        ...(await installPreflight(client, {
          cronHere: schedule && place.loaded && place.cronDatabase === place.current,
          log,
        })),
      );
    }

    // node-pg-migrate keeps its table in schema public, where other roles may be allowed to create
    // objects: one planted there before the first install (a trigger on it, or rows saying the
    // migrations ran) would run its code as the installer or skip the install. Only ours is used.
    const planted = await client.query<{ owner: string }>(
      `
      select pg_catalog.pg_get_userbyid(c.relowner) as owner from pg_catalog.pg_class c
       where c.oid operator(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.format('public.%I', $1::pg_catalog.text))
         and c.relowner operator(pg_catalog.<>) (select r.oid from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) current_user)
         and not (select r.rolsuper from pg_catalog.pg_roles r where r.oid operator(pg_catalog.=) c.relowner)`,
      [migrationsTable],
    );
    if (planted.rows.length > 0) {
      throw new OrderAutomationError(
        `public.${migrationsTable} belongs to role "${planted.rows[0]!.owner}", not to the role installing ` +
          'order-automation: another role may have planted it to run its code as you. Check it, drop it (or make it yours), and migrate again.',
      );
    }

    await client.query(`select set_config('order_automation.schedule', $1, false)`, [
      !schedule ? 'off' : external ? 'external' : 'on',
    ]);
    try {
      const ran = await runner({
        dbClient: client as pg.Client,
        dir: migrationsDir,
        migrationsTable,
        direction,
        count: options.count ?? Infinity,
        singleTransaction: true,
        lockValue,
        advisoryLockMode: 'wait',
        logger,
      });
      let scheduledIn: string | null = null;
      if (direction === 'up') {
        // Jobs not scheduled yet (first install, or installed earlier with schedule: false).
        const pending = schedule
          ? (
              await client.query<{ job: string; jobname: string; schedule: string; command: string }>(`
          select job, order_automation.cron_jobname(job) as jobname, schedule, command
            from order_automation.job where cron_database is null order by job`)
            ).rows
          : [];
        if (pending.length > 0 && !external) {
          await client.query('select order_automation.schedule_jobs()');
        } else if (pending.length > 0) {
          await withDatabase(db, place.cronDatabase!, async (cron) => {
            for (const job of pending) {
              await cron.query('select cron.schedule_in_database($1, $2, $3, $4)', [
                job.jobname,
                job.schedule,
                job.command,
                place.current,
              ]);
            }
          });
          await client.query('update order_automation.job set cron_database = $1 where cron_database is null', [
            place.cronDatabase,
          ]);
          log?.(`scheduled ${pending.length} pg_cron jobs from database "${place.cronDatabase}"`);
        }
        const where = await client.query<{ cron_database: string | null }>(
          'select min(cron_database) as cron_database from order_automation.job',
        );
        scheduledIn = where.rows[0]?.cron_database ?? null;
      }
      return { migrations: ran.map((m) => m.name), scheduledIn, warnings };
    } finally {
      await client.query(`select set_config('order_automation.schedule', '', false)`).catch(() => undefined);
    }
  }).catch((error: unknown) => {
    throw failedMigration(error);
  });
}

/** A failure as one paragraph: the package's errors and the server's as they are; node-pg-migrate's own (several lines, a stack) cut to their first line. */
function failedMigration(error: unknown): unknown {
  const mapped = toOrderAutomationError(error);
  if (mapped instanceof OrderAutomationError || typeof (mapped as { code?: unknown }).code === 'string') return mapped;
  const message = mapped instanceof Error ? mapped.message : String(mapped);
  return new OrderAutomationError(`migrating failed: ${message.split('\n')[0]!.trim()}`, { cause: error });
}
