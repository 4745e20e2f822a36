// The state of the automation, per job: schedule and whether pg_cron runs it, the last run, what is
// due now and the next deadline; and the settings. pg_cron is read where the server says it lives
// (this database, through the package's own routine; or cron.database_name), never where a table says.
import pg from 'pg';
import { type Db, withClient } from './db.js';
import { nextFireTime } from './cron.js';
import { getSettings, getStoreSettings, type Settings, type StoreSettings } from './settings.js';
import { type CronPlace, cronPlace, installerRole, packageJobsIn, seesJobsOf, withCronDatabase } from './pg-cron.js';
import type { JobName } from './types.js';

/**
 * What pg_cron holds for a job: active; paused; missing (the job is scheduled, but cron.job no longer
 * has it: migrate re-creates it); not scheduled (installed without a schedule); unknown (pg_cron could
 * not be read by this role: it lives in another database and only the installer or a superuser sees
 * the installer's jobs there).
 */
export type PgCronState = 'active' | 'paused' | 'missing' | 'not scheduled' | 'unknown';

export interface LastRun {
  id: number;
  startedAt: Date;
  /** null: still running, or killed before it could finish. */
  finishedAt: Date | null;
  processed: number;
  /** Orders skipped because processing them failed (see order_automation.order_failure). */
  failed: number;
  error: string | null;
}

export interface JobStatus {
  job: JobName;
  schedule: string;
  /** Database whose pg_cron runs the job (the server's cron.database_name); null: not scheduled, or not known. */
  cronDatabase: string | null;
  cronJobName: string;
  /** What pg_cron holds for the job. */
  pgCron: PgCronState;
  /** Whether pg_cron has the job and it is active; null when pg_cron could not be asked. */
  active: boolean | null;
  /** When pg_cron next starts it (schedule in UTC); null when not scheduled or paused. */
  nextRunAt: Date | null;
  lastRun: LastRun | null;
  /** Orders the job would process now, but failing ones (null: not an order job). */
  dueNow: number | null;
  /** Orders held (hold / release), so not processed however due. */
  held: number | null;
  nextDeadline: Date | null;
  /**
   * The latest after its deadline that the job's last 60 runs processed an order, in milliseconds
   * (0: none late); null when they processed none.
   */
  worstLatenessMs: number | null;
  /**
   * Orders the job failed to process and is retrying (one row each in order_automation.failing_order,
   * with the number of failures and the last error); null: not an order job.
   */
  failing: number | null;
  /** When the longest-failing of them first failed; null: none. */
  failingSince: Date | null;
}

export interface Status {
  database: string;
  jobs: JobStatus[];
  settings: Settings;
  storeSettings: StoreSettings[];
}

interface JobStatusRow {
  job: JobName;
  schedule: string;
  active: boolean;
  cron_database: string | null;
  cron_jobname: string;
  last_run_id: string | null;
  last_started_at: Date | null;
  last_finished_at: Date | null;
  last_processed: string | null;
  last_failed: string | null;
  last_error: string | null;
  due_now: string | null;
  held: string | null;
  next_deadline: Date | null;
  cron_state: 'active' | 'paused' | 'missing' | 'not scheduled' | null;
  cron_schedule: string | null;
  worst_lateness_ms: number | null;
  failing: string | null;
  failing_since: Date | null;
  database: string;
}

/** The state of the scheduled jobs in pg_cron's other database, read as this role; null: unknown. */
async function remoteCronStates(
  db: Db,
  client: pg.ClientBase,
  names: string[],
): Promise<{ database: string | null; jobs: Map<string, { state: PgCronState; schedule: string | null }> | null }> {
  const place = await cronPlace(client);
  const owner = await installerRole(client);
  if (place.cronDatabase === null || owner === null) return { database: null, jobs: null };
  return { database: place.cronDatabase, jobs: await readJobs(db, place, owner, names) };
}

async function readJobs(
  db: Db,
  place: CronPlace,
  owner: string,
  names: string[],
): Promise<Map<string, { state: PgCronState; schedule: string | null }> | null> {
  try {
    return await withCronDatabase(db, place, async (cron) => {
      // pg_cron shows each role only its own jobs: a role that cannot see the installer's cannot
      // tell "missing" from "hidden".
      if (!(await seesJobsOf(cron, owner))) return null;
      const jobs = new Map((await packageJobsIn(cron, owner, place.current)).map((j) => [j.jobname, j]));
      return new Map(
        names.map((name) => {
          const job = jobs.get(name);
          const state: PgCronState = !job ? 'missing' : job.active ? 'active' : 'paused';
          return [name, { state, schedule: job?.schedule ?? null }];
        }),
      );
    });
  } catch {
    // No connection, no right on schema cron there: unknown, said so.
    return null;
  }
}

export async function getStatus(db: Db): Promise<Status> {
  return withClient(db, async (client) => {
    const { rows } = await client.query<JobStatusRow>(
      `select *, (extract(epoch from worst_lateness) * 1000)::float8 as worst_lateness_ms, current_database() as database
         from order_automation.job_status()`,
    );
    const settings = await getSettings(client);
    const storeSettings = await getStoreSettings(client);
    const database = rows[0]?.database ?? '';
    // Scheduled jobs pg_cron keeps in another database: asked there (cron_state NULL).
    const elsewhere = rows.filter((r) => r.cron_state === null).map((r) => r.cron_jobname);
    const remote = elsewhere.length > 0 ? await remoteCronStates(db, client, elsewhere) : undefined;
    const jobs = rows.map((r): JobStatus => {
      const there = remote?.jobs?.get(r.cron_jobname);
      const pgCron: PgCronState = r.cron_state ?? there?.state ?? 'unknown';
      const schedule = (r.cron_state !== null ? r.cron_schedule : there?.schedule) ?? r.schedule;
      const active = pgCron === 'active' ? true : pgCron === 'unknown' ? null : false;
      return {
        job: r.job,
        schedule,
        // Shown, never connected to: the server's cron.database_name, or the installer's record of it.
        cronDatabase:
          pgCron === 'not scheduled' ? null : r.cron_state !== null ? database : (remote?.database ?? r.cron_database),
        cronJobName: r.cron_jobname,
        pgCron,
        active,
        nextRunAt: active === true ? nextFireTime(schedule) : null,
        lastRun:
          r.last_run_id === null
            ? null
            : {
                id: Number(r.last_run_id),
                startedAt: r.last_started_at!,
                finishedAt: r.last_finished_at,
                processed: Number(r.last_processed),
                failed: Number(r.last_failed),
                error: r.last_error,
              },
        dueNow: r.due_now === null ? null : Number(r.due_now),
        held: r.held === null ? null : Number(r.held),
        nextDeadline: r.next_deadline,
        worstLatenessMs: r.worst_lateness_ms,
        failing: r.failing === null ? null : Number(r.failing),
        failingSince: r.failing_since,
      };
    });
    return { database, jobs, settings, storeSettings };
  });
}
