// Installing the package: node-pg-migrate runs the migrations under a package-specific advisory
// lock, all in one transaction; pg_cron jobs are scheduled here, or from pg_cron's own database.
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { runner } from 'node-pg-migrate';
import {
  adoptionMismatches,
  adoptionRefused,
  adoptionRequired,
  existingShopTables,
  packageInstalled,
  type BackfillColumns,
} from './adopt.js';
import { type Db, withClient, withDatabase } from './db.js';
import {
  InvalidArgumentError,
  OrderAutomationError,
  PgCronUnavailableError,
  toOrderAutomationError,
} from './errors.js';
import { orderStates, type OrderState } from './types.js';

export const migrationsDir = fileURLToPath(new URL('../migrations', import.meta.url));
export const migrationsTable = 'order_automation_migrations';
/** Our own advisory lock: an app's node-pg-migrate (default lock) never waits on ours. */
const lockValue = 4_242_001_002;
/** The release that installs onto an app's tables: an adopted database cannot go down to a release before it. */
const adoptionRelease = '0003_adopt';

export interface MigrateOptions {
  /** 'up' (default) applies every pending migration; 'down' reverts `count` (default: all). */
  direction?: 'up' | 'down';
  count?: number;
  /** false installs without pg_cron jobs: you then call the procedures yourself. Default true. */
  schedule?: boolean;
  /** Progress lines (default: silent). */
  log?: (line: string) => void;
  /**
   * Install onto shop tables an app created, keeping them and their rows as they are (only the
   * package's own columns, indexes and triggers are added). Without it, migrate refuses such tables.
   */
  adopt?: boolean;
  /** With adopt: new_order's own column of order creation times (timestamp, timestamptz or epoch seconds), for the deadlines of orders already unpaid. */
  createdAtColumn?: string;
  /** With adopt: new_order's own column of shipping times, for the receipt deadlines of orders already shipped. */
  shippedAtColumn?: string;
  /** The bookkeeping setting of a first install: 'full' (the default) or 'automation' (the default with adopt). */
  bookkeeping?: 'full' | 'automation';
  /** The state codes of a first install (settings state_unpaid ... state_cancelled), e.g. { cancelled: -1 }. */
  stateCodes?: Partial<Record<OrderState, number>>;
}

export interface MigrateResult {
  /** Names of the migrations applied (or reverted) by this call; empty when there was nothing to do. */
  migrations: string[];
  /** Where the pg_cron jobs run: this database's name, pg_cron's database, or null (no schedule). */
  scheduledIn: string | null;
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

/** What the migrations are told through session settings (read by 0003_adopt). */
interface InstallPlan {
  adopt: boolean;
  bookkeeping: string;
  stateCodes: string;
  backfill: BackfillColumns;
}

/** Decides, before anything is changed, how to install: fresh, onto an app's tables, or not at all. */
async function installPlan(client: pg.ClientBase, options: MigrateOptions): Promise<InstallPlan> {
  const { adopt = false, createdAtColumn, shippedAtColumn, bookkeeping, stateCodes, log } = options;
  if (bookkeeping !== undefined && bookkeeping !== 'full' && bookkeeping !== 'automation') {
    throw new InvalidArgumentError(`bookkeeping must be full or automation, not ${JSON.stringify(bookkeeping)}`);
  }
  for (const [name, code] of Object.entries(stateCodes ?? {})) {
    if (!orderStates.includes(name as OrderState)) {
      throw new InvalidArgumentError(`unknown state "${name}": the states are ${orderStates.join(', ')}`);
    }
    if (!Number.isInteger(code) || code < -32768 || code > 32767) {
      throw new InvalidArgumentError(
        `the code of state ${name} must be a whole number from -32768 to 32767, not ${code}`,
      );
    }
  }
  const codes = orderStates.map((state, i) => stateCodes?.[state] ?? i);
  if (new Set(codes).size !== codes.length) {
    throw new InvalidArgumentError(
      `the five state codes must be different, not ${orderStates.map((state, i) => `${state}=${codes[i]}`).join(', ')}`,
    );
  }
  if ((createdAtColumn !== undefined || shippedAtColumn !== undefined) && !adopt) {
    throw new InvalidArgumentError(
      'createdAtColumn and shippedAtColumn (--created-at-column, --shipped-at-column) need adopt (--adopt)',
    );
  }
  const none: InstallPlan = { adopt: false, bookkeeping: '', stateCodes: '', backfill: {} };
  if (await packageInstalled(client, migrationsTable)) {
    if (adopt || bookkeeping !== undefined || stateCodes !== undefined || createdAtColumn || shippedAtColumn) {
      log?.(
        'order-automation is already installed here: adopt, bookkeeping and state codes apply to a first install only (change settings with order-automation settings set)',
      );
    }
    return none;
  }
  const found = await existingShopTables(client);
  if (found.length > 0 && !adopt) throw adoptionRequired(found);
  const plan: InstallPlan = {
    adopt: found.length > 0,
    bookkeeping: bookkeeping ?? (adopt ? 'automation' : ''),
    stateCodes: stateCodes === undefined ? '' : JSON.stringify(stateCodes),
    backfill: { createdAtColumn, shippedAtColumn },
  };
  if (adopt && found.length === 0) log?.("no shop table to adopt here: installing the package's own");
  if (plan.adopt) {
    const mismatches = await adoptionMismatches(client, found, plan.backfill);
    if (mismatches.length > 0) throw adoptionRefused(mismatches);
    log?.(`adopting ${found.join(', ')}: kept as they are; the package adds its own columns, indexes and triggers`);
  }
  return plan;
}

/** An adopted database goes down whole: reverting the adopting release alone would leave earlier ones that cannot run on the app's tables. */
async function checkAdoptedDown(client: pg.ClientBase, count: number): Promise<void> {
  const { rows } = await client.query<{ adopted: boolean }>(
    `select pg_catalog.to_regclass('order_automation.adopted_table') is not null as adopted`,
  );
  if (!rows[0]!.adopted) return;
  const adopted = await client.query<{ adopted: boolean }>(
    'select exists (select from order_automation.adopted_table) as adopted',
  );
  if (!adopted.rows[0]!.adopted) return;
  const applied = (
    await client.query<{ name: string }>(`select name from public.${migrationsTable} order by run_on, id`)
  ).rows.map((r) => r.name);
  const kept = applied.slice(0, Math.max(0, applied.length - count));
  if (kept.length > 0 && !kept.includes(adoptionRelease)) {
    throw new InvalidArgumentError(
      `this database was adopted (order-automation was installed onto an app's own tables by ${adoptionRelease}): ` +
        `it can go down whole (order-automation migrate --down), which keeps the app's tables and rows, but not to a release before ${adoptionRelease}. Nothing was changed.`,
    );
  }
}

/** Applies (or reverts) the package's migrations; see MigrateOptions. Safe to run twice or concurrently. */
export async function migrate(db: Db, options: MigrateOptions = {}): Promise<MigrateResult> {
  const { direction = 'up', schedule = true, log } = options;
  const logger = {
    debug: () => undefined,
    info: log ?? (() => undefined),
    warn: log ?? (() => undefined),
    error: log ?? (() => undefined),
  };
  return withClient(db, async (client) => {
    const place = await cronPlace(client);
    const external = schedule && place.loaded && place.cronDatabase !== null && place.cronDatabase !== place.current;
    // Decided before anything changes: a refusal leaves the database as it was.
    let plan: InstallPlan = { adopt: false, bookkeeping: '', stateCodes: '', backfill: {} };
    if (direction === 'up') plan = await installPlan(client, options);
    else await checkAdoptedDown(client, options.count ?? Infinity);

    if (direction === 'down') {
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
    // How to install, for the migrations to read (0003_adopt); cleared below whatever happens.
    await client.query(
      `select pg_catalog.set_config('order_automation.adopt', $1, false),
              pg_catalog.set_config('order_automation.bookkeeping', $2, false),
              pg_catalog.set_config('order_automation.state_codes', $3, false),
              pg_catalog.set_config('order_automation.created_at_column', $4, false),
              pg_catalog.set_config('order_automation.shipped_at_column', $5, false)`,
      [
        plan.adopt ? 'on' : '',
        plan.bookkeeping,
        plan.stateCodes,
        plan.backfill.createdAtColumn ?? '',
        plan.backfill.shippedAtColumn ?? '',
      ],
    );
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
      return { migrations: ran.map((m) => m.name), scheduledIn };
    } finally {
      await client
        .query(
          `select pg_catalog.set_config(name, '', false) from pg_catalog.unnest(array['order_automation.schedule', 'order_automation.adopt',
             'order_automation.bookkeeping', 'order_automation.state_codes', 'order_automation.created_at_column',
             'order_automation.shipped_at_column', 'order_automation.adoption_removed']) name`,
        )
        .catch(() => undefined);
    }
  }).catch((error: unknown) => {
    throw toOrderAutomationError(error);
  });
}
