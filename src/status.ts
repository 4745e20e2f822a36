// The state of the automation, per job: schedule and whether pg_cron runs it, the last run, what is
// due now and the next deadline; and the settings.
import pg from 'pg';
import { type Db, withClient, withDatabase } from './db.js';
import { nextFireTime } from './cron.js';
import { getSettings, getStoreSettings, type Settings, type StoreSettings } from './settings.js';
import type { JobName } from './types.js';

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
  /** Database whose pg_cron runs the job; null: not scheduled. */
  cronDatabase: string | null;
  cronJobName: string;
  /** Whether pg_cron has the job and it is active; null when pg_cron could not be asked. */
  active: boolean | null;
  /** When pg_cron next starts it (schedule in UTC); null when not scheduled or paused. */
  nextRunAt: Date | null;
  lastRun: LastRun | null;
  /** Orders the job would process now (null: not an order job). */
  dueNow: number | null;
  /** Orders held (hold / release), so not processed however due. */
  held: number | null;
  nextDeadline: Date | null;
  /**
   * The latest after its deadline that the job's last 60 runs processed an order, in milliseconds
   * (0: none late); null when they processed none.
   */
  worstLatenessMs: number | null;
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
  worst_lateness_ms: number | null;
  database: string;
}

async function cronActive(
  client: pg.ClientBase,
  names: string[],
): Promise<Map<string, { active: boolean; schedule: string }>> {
  const { rows } = await client.query<{ jobname: string; active: boolean; schedule: string }>(
    'select jobname, active, schedule from cron.job where jobname = any ($1::text[])',
    [names],
  );
  return new Map(rows.map((r) => [r.jobname, { active: r.active, schedule: r.schedule }]));
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
    // What pg_cron itself says, from the database it lives in (this one, or another of the server).
    const cron = new Map<string, { active: boolean; schedule: string }>();
    for (const cronDb of new Set(rows.map((r) => r.cron_database).filter((d): d is string => d !== null))) {
      const names = rows.filter((r) => r.cron_database === cronDb).map((r) => r.cron_jobname);
      try {
        const found =
          cronDb === database
            ? await cronActive(client, names)
            : await withDatabase(db, cronDb, (other) => cronActive(other, names));
        for (const [k, v] of found) cron.set(k, v);
      } catch {
        // pg_cron unreadable from here (no privilege, no connection): active stays unknown.
      }
    }
    const jobs = rows.map((r): JobStatus => {
      const inCron = cron.get(r.cron_jobname);
      const schedule = inCron?.schedule ?? r.schedule;
      const active = r.cron_database === null ? false : inCron ? inCron.active : null;
      return {
        job: r.job,
        schedule,
        cronDatabase: r.cron_database,
        cronJobName: r.cron_jobname,
        active,
        nextRunAt: active === false || r.cron_database === null ? null : nextFireTime(schedule),
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
      };
    });
    return { database, jobs, settings, storeSettings };
  });
}
