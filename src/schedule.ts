// Control of the pg_cron schedule: change a job's cron schedule, pause it, resume it — here, or in
// pg_cron's own database when the jobs were scheduled from there.
import { type Db, withClient, withDatabase } from './db.js';
import { scheduleProblem, serverPgCronVersion } from './cron.js';
import { InvalidArgumentError } from './errors.js';
import type { JobName } from './types.js';

export interface ScheduleChange {
  /** Cron syntax, e.g. '*\/5 * * * *' (from pg_cron 1.5 also '30 seconds'); an invalid one is refused and nothing changes. */
  schedule?: string;
  /** false pauses the job, true resumes it. */
  active?: boolean;
}

/** Changes a job's schedule and/or pauses or resumes it, all or nothing. */
export async function setSchedule(db: Db, job: JobName, change: ScheduleChange): Promise<void> {
  // pg_cron judges a schedule only where it lives and only for a scheduled job: judge it here too,
  // by the server's pg_cron, or a schedule it would refuse is stored now and breaks the next migrate.
  if (change.schedule !== undefined) {
    const problem = scheduleProblem(change.schedule, await serverPgCronVersion(db));
    if (problem) throw new InvalidArgumentError(problem, { sqlstate: 'OA006' });
  }
  await withClient(db, async (client) => {
    await client.query('begin');
    try {
      // Validates the job, records the change, and applies it to pg_cron when it lives here.
      await client.query('select order_automation.set_schedule($1::text, $2::text, $3::boolean)', [
        job,
        change.schedule ?? null,
        change.active ?? null,
      ]);
      const { rows } = await client.query<{
        cron_database: string | null;
        jobname: string;
        schedule: string;
        active: boolean;
        here: boolean;
      }>(
        `
        select cron_database, order_automation.cron_jobname(job) as jobname, schedule, active,
               cron_database = current_database() as here
          from order_automation.job where job = $1`,
        [job],
      );
      const row = rows[0]!;
      if (row.cron_database !== null && !row.here) {
        await withDatabase(db, row.cron_database, (cron) =>
          cron.query('select cron.alter_job(jobid, schedule => $2, active => $3) from cron.job where jobname = $1', [
            row.jobname,
            row.schedule,
            row.active,
          ]),
        );
      }
      await client.query('commit');
    } catch (error) {
      await client.query('rollback').catch(() => undefined);
      throw error;
    }
  });
}

export const pauseJob = (db: Db, job: JobName): Promise<void> => setSchedule(db, job, { active: false });
export const resumeJob = (db: Db, job: JobName): Promise<void> => setSchedule(db, job, { active: true });
