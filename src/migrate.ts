// Installing the package: node-pg-migrate runs the migrations under a package-specific advisory
// lock, all in one transaction; pg_cron jobs are scheduled here, or from pg_cron's own database
// (the server's cron.database_name, never a database named by a table), with the commands the
// package fixes for them.
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
import { type Db, withClient } from './db.js';
import { confirmDown, installPreflight } from './migrate-checks.js';
import { cronFindings, type Finding, paragraph } from './preflight.js';
import { type CronPlace, cronPlace, packageJobsIn, withCronDatabase } from './pg-cron.js';
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
const adoptionRelease = '0005_adopt';

export interface MigrateOptions {
  /** 'up' (default) applies every pending migration; 'down' reverts `count` (default: all). */
  direction?: 'up' | 'down';
  count?: number;
  /** false installs without pg_cron jobs: you then call the procedures yourself. Default true. */
  schedule?: boolean;
  /** Lines worth telling: jobs scheduled elsewhere, warnings (default: silent). */
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

/**
 * Checks before anything is applied that we may schedule from pg_cron's database: the extension is
 * created there and this role may call what the install and schedule control call (each GRANT missing
 * is named, in one paragraph).
 */
async function checkCronDatabase(db: Db, place: CronPlace): Promise<void> {
  const cronDb = place.cronDatabase!;
  const advice = `pg_cron runs in database "${cronDb}" (cron.database_name), not in "${place.current}": the jobs are scheduled from there with cron.schedule_in_database`;
  let found: { role: string; findings: Finding[] };
  try {
    found = await withCronDatabase(db, place, async (cron) => {
      const role = (await cron.query<{ role: string }>('select current_user::pg_catalog.text as role')).rows[0]!.role;
      return { role, findings: await cronFindings(cron, role, 'elsewhere') };
    });
  } catch (error) {
    throw new PgCronUnavailableError(`${advice}, and connecting there failed: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (found.findings.length > 0) {
    throw new PgCronUnavailableError(
      `${paragraph(`${advice}, and role "${found.role}" cannot:`, found.findings)} Nothing was applied; run ${found.findings.length === 1 ? 'it' : 'them'} and migrate again, or migrate with --no-schedule.`,
    );
  }
}

interface WantedJob {
  jobname: string;
  schedule: string;
  active: boolean;
  command: string;
}

/**
 * Brings this database's jobs in pg_cron's (other) database to `wanted`, as the role running it:
 * missing jobs created (a paused one paused), others brought to their schedule, command and state,
 * and the package's jobs no longer wanted removed. One transaction there, under a lock of its own,
 * so two installers at once queue. With `removeOnly`, nothing is created or changed, only removed.
 */
async function syncRemoteJobs(
  db: Db,
  place: CronPlace,
  wanted: WantedJob[],
  options: { removeOnly?: boolean } = {},
): Promise<{ created: number; removed: number }> {
  return withCronDatabase(db, place, async (cron) => {
    await cron.query('begin');
    try {
      await cron.query('select pg_catalog.pg_advisory_xact_lock($1::integer, pg_catalog.hashtext($2))', [
        lockValue % 2 ** 31,
        place.current,
      ]);
      const me = (await cron.query<{ me: string }>('select current_user::pg_catalog.text as me')).rows[0]!.me;
      const existing = await packageJobsIn(cron, me, place.current);
      const byName = new Map(existing.map((j) => [j.jobname, j]));
      const wantedNames = new Set(wanted.map((w) => w.jobname));
      let created = 0;
      let removed = 0;
      for (const job of existing) {
        if (!wantedNames.has(job.jobname)) {
          await cron.query('select cron.unschedule($1::bigint)', [job.jobid]);
          removed++;
        }
      }
      if (!options.removeOnly) {
        for (const job of wanted) {
          const there = byName.get(job.jobname);
          try {
            if (!there) {
              await cron.query('select cron.schedule_in_database($1, $2, $3, $4, active => $5)', [
                job.jobname,
                job.schedule,
                job.command,
                place.current,
                job.active,
              ]);
              created++;
              continue;
            }
            if (there.schedule !== job.schedule || there.command !== job.command) {
              // Upserts by name and role: the same job, its schedule and command set.
              await cron.query('select cron.schedule_in_database($1, $2, $3, $4)', [
                job.jobname,
                job.schedule,
                job.command,
                place.current,
              ]);
            }
            if (there.active !== job.active) {
              await cron.query('select cron.alter_job($1::bigint, active => $2)', [there.jobid, job.active]);
            }
          } catch (error) {
            if (!/invalid schedule/i.test((error as Error).message)) throw error;
            // Recorded by set_schedule() while pg_cron was out of its reach: said, never run.
            throw new InvalidArgumentError(
              `pg_cron refuses the schedule recorded for ${job.jobname} (${JSON.stringify(job.schedule)}): ${(error as Error).message}. ` +
                'Nothing was scheduled. Set a valid one (order-automation schedule set <job> "<cron>") and migrate again.',
              { cause: error },
            );
          }
        }
      }
      await cron.query('commit');
      return { created, removed };
    } catch (error) {
      await cron.query('rollback').catch(() => undefined);
      throw error;
    }
  });
}

/** The package's jobs as pg_cron must run them: each one's fixed command, never a column's. */
async function wantedJobs(client: pg.ClientBase): Promise<WantedJob[] | null> {
  const fixed = await client.query<{ ok: boolean }>(
    `select pg_catalog.to_regprocedure('order_automation.job_command(text)') is not null as ok`,
  );
  // A release older than the fixed commands (a partial migrate): its jobs are scheduled by the next one.
  if (!fixed.rows[0]!.ok) return null;
  const { rows } = await client.query<WantedJob>(`
    select order_automation.cron_jobname(j.job) as jobname, j.schedule, j.active, order_automation.job_command(j.job) as command
      from order_automation.job j order by j.job`);
  return rows;
}

/** What the migrations are told through session settings (read by 0005_adopt). */
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
  // node-pg-migrate's lines (and, on a failure, the whole SQL that failed) only when asked for.
  const quiet = () => undefined;
  const npm = options.verbose ? (log ?? quiet) : quiet;
  const logger = { debug: quiet, info: npm, warn: npm, error: npm };
  return withClient(db, async (client) => {
    const place = await cronPlace(client);
    // pg_cron in another database of the server: the jobs are scheduled from there, by this code.
    const remote = place.cronDatabase !== null && place.cronDatabase !== place.current;
    const external = schedule && remote;
    // Decided before anything changes: a refusal leaves the database as it was. A role that may not
    // install is told first, with the GRANTs it lacks.
    const warnings: string[] = [];
    if (direction === 'up') {
      warnings.push(
        ...(await installPreflight(client, {
          cronHere: schedule && place.cronDatabase === place.current,
          // Where pg_cron's extension is not here, only cron.database_name can tell where it runs.
          cronUnknown: schedule && place.cronDatabase === null && !place.canReadSettings,
          log,
        })),
      );
      if (external) await checkCronDatabase(db, place);
    }
    let plan: InstallPlan = { adopt: false, bookkeeping: '', stateCodes: '', backfill: {} };
    if (direction === 'up') plan = await installPlan(client, options);
    else {
      await checkAdoptedDown(client, options.count ?? Infinity);
      await confirmDown(client, { count: options.count, confirm: options.confirm === true });
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

    // Whether this database has jobs in pg_cron's other database, for a down to remove once it has committed.
    const hadRemoteJobs =
      direction === 'down' &&
      remote &&
      (
        await client.query<{ some: boolean }>(`
          select pg_catalog.to_regclass('order_automation.job') is not null
             and exists (select from order_automation.job j where j.cron_database is not null) as some`)
      ).rows[0]!.some;

    // The installers frozen in the first two releases find pg_cron by reading cron.database_name,
    // which a role without pg_read_all_settings may not read, even where pg_cron's extension is in
    // this database. For such a role the migrations (up or down) leave the jobs alone, and an up
    // schedules them right after, below, by the current release's schedule_jobs(), which finds
    // pg_cron by its extension (installPreflight has checked the grants it needs there). The jobs'
    // commands are the same in every release.
    const scheduleAfter = place.here && !place.canReadSettings;
    await client.query(`select pg_catalog.set_config('order_automation.schedule', $1, false)`, [
      !schedule ? 'off' : remote || scheduleAfter ? 'external' : 'on',
    ]);
    // How to install, for the migrations to read (0005_adopt); cleared below whatever happens.
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
      // One transaction: a failing up or down changes nothing, here or in pg_cron (a down touches
      // pg_cron's other database only once it has committed).
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
      const installed = (
        await client.query<{ ok: boolean }>(`select pg_catalog.to_regclass('order_automation.job') is not null as ok`)
      ).rows[0]!.ok;
      if (direction === 'down') {
        if (hadRemoteJobs) {
          const kept = installed
            ? (
                await client.query<WantedJob>(`
                select order_automation.cron_jobname(j.job) as jobname, j.schedule, j.active, '' as command
                  from order_automation.job j where j.cron_database is not null`)
              ).rows
            : [];
          try {
            const { removed } = await syncRemoteJobs(db, place, kept, { removeOnly: true });
            if (removed > 0) log?.(`removed ${removed} pg_cron jobs from database "${place.cronDatabase}"`);
          } catch (error) {
            throw new PgCronUnavailableError(
              `the down committed, but removing this database's jobs from pg_cron in database "${place.cronDatabase}" failed: ` +
                `${(error as Error).message}. Remove them there (SELECT cron.unschedule(jobid) FROM cron.job WHERE database = '${place.current}'), or run the down again as the role that installed the package.`,
              { cause: error },
            );
          }
        }
        return { migrations: ran.map((m) => m.name), scheduledIn: null, warnings };
      }
      let scheduledIn: string | null = null;
      if (schedule && installed) {
        if (external) {
          // Every run, not only after an install: jobs missing from pg_cron are created again.
          const wanted = await wantedJobs(client);
          if (wanted) {
            const { created } = await syncRemoteJobs(db, place, wanted);
            await client.query(
              'update order_automation.job set cron_database = $1 where cron_database is distinct from $1',
              [place.cronDatabase],
            );
            if (created > 0) log?.(`scheduled ${created} pg_cron jobs from database "${place.cronDatabase}"`);
          }
        } else {
          // pg_cron here (or nowhere: the installer says why, OA010).
          await client.query('select order_automation.schedule_jobs()');
        }
      }
      if (installed) {
        const where = await client.query<{ cron_database: string | null }>(
          'select min(cron_database) as cron_database from order_automation.job',
        );
        scheduledIn = where.rows[0]?.cron_database ?? null;
      }
      return { migrations: ran.map((m) => m.name), scheduledIn, warnings };
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
