// Control of the pg_cron schedule: change a job's cron schedule, pause it, resume it. Where pg_cron
// lives in this database, order_automation.set_schedule() does it all, as the installing role, on
// the installer's own job: any role granted it may call it. Where pg_cron lives in another database
// of the server, that routine only records the change, and this module applies it there, on a
// connection of its own, to the installer's job: only the installing role (or a superuser) can.
import pg from 'pg';
import { type Db, withClient } from './db.js';
import { scheduleProblem, serverPgCronVersion } from './cron.js';
import { InvalidArgumentError, OrderAutomationError, PgCronJobMissingError, PgCronUnavailableError } from './errors.js';
import { type CronPlace, cronPlace, installerRole, seesJobsOf, unknownCronPlace, withCronDatabase } from './pg-cron.js';
import type { JobName } from './types.js';

export interface ScheduleChange {
  /** Cron syntax, e.g. '*\/5 * * * *' (from pg_cron 1.5 also '30 seconds'); an invalid one is refused and nothing changes. */
  schedule?: string;
  /** false pauses the job, true resumes it. */
  active?: boolean;
}

const savepoint = 'order_automation_set_schedule';

/**
 * Whether `client` is inside a transaction block: if so, a savepoint is now open on it (ours to
 * release or roll back to), so that a failure of ours undoes only our part of the caller's transaction.
 */
async function openSavepoint(client: pg.ClientBase): Promise<boolean> {
  try {
    await client.query(`savepoint ${savepoint}`);
    return true;
  } catch (error) {
    // 25P01: "SAVEPOINT can only be used in transaction blocks" — we are not in one.
    if ((error as { code?: string }).code === '25P01') return false;
    throw error;
  }
}

/**
 * Changes a job's schedule and/or pauses or resumes it, all or nothing. Never commits or rolls back a
 * transaction of the caller's: given a Client inside BEGIN, it joins that transaction when pg_cron
 * lives in this database (the change commits or rolls back with it), and refuses, changing nothing,
 * when pg_cron lives in another database (its change there would commit on its own, whatever the
 * caller's transaction then does). OA011 (PgCronJobMissingError) when the job is scheduled but
 * missing from pg_cron: `migrate` re-creates it.
 */
export async function setSchedule(db: Db, job: JobName, change: ScheduleChange): Promise<void> {
  // pg_cron judges a schedule only where it lives and only for a scheduled job: judge it here too,
  // by the server's pg_cron, or a schedule it would refuse is stored now and breaks the next migrate.
  if (change.schedule !== undefined) {
    const problem = scheduleProblem(change.schedule, await serverPgCronVersion(db));
    if (problem) throw new InvalidArgumentError(problem, { sqlstate: 'OA006' });
  }
  await withClient(db, async (client) => {
    const inBlock = await openSavepoint(client);
    if (!inBlock) await client.query('begin');
    try {
      const place = await cronPlace(client);
      const { rows } = await client.query<{ scheduled: boolean; jobname: string }>(
        `select j.cron_database is not null as scheduled, order_automation.cron_jobname(j.job) as jobname
           from order_automation.job j where j.job = $1`,
        [job],
      );
      const remote = rows[0]?.scheduled === true && !place.here;
      if (remote && inBlock) {
        throw new OrderAutomationError(
          `setSchedule cannot join your transaction: pg_cron lives in ${place.cronDatabase === null ? 'another database' : `database "${place.cronDatabase}"`}, ` +
            'where the change commits on a connection of its own whatever your transaction then does. Nothing changed: call it outside BEGIN ... COMMIT.',
        );
      }
      // Validates the job (OA006), records the change, and applies it to pg_cron when it lives here (OA011 when the job is missing).
      await client.query('select order_automation.set_schedule($1::text, $2::text, $3::boolean)', [
        job,
        change.schedule ?? null,
        change.active ?? null,
      ]);
      if (remote) await applyInCronDatabase(db, client, place, job, rows[0]!.jobname);
      await client.query(inBlock ? `release savepoint ${savepoint}` : 'commit');
    } catch (error) {
      await client
        .query(inBlock ? `rollback to savepoint ${savepoint}; release savepoint ${savepoint}` : 'rollback')
        .catch(() => undefined);
      throw error;
    }
  });
}

/** Applies the recorded schedule and state of `job` to the installer's job in pg_cron's other database. */
async function applyInCronDatabase(
  db: Db,
  client: pg.ClientBase,
  place: CronPlace,
  job: JobName,
  jobname: string,
): Promise<void> {
  const unknown = unknownCronPlace(place);
  if (unknown)
    throw new PgCronUnavailableError(`${unknown}: the schedule of ${job} cannot be changed. Nothing changed.`);
  const owner = (await installerRole(client))!;
  const { rows } = await client.query<{ schedule: string; active: boolean }>(
    'select schedule, active from order_automation.job where job = $1',
    [job],
  );
  const { schedule, active } = rows[0]!;
  await withCronDatabase(db, place, async (cron) => {
    if (!(await seesJobsOf(cron, owner))) {
      throw new PgCronUnavailableError(
        `pg_cron lives in database "${place.cronDatabase}", where the jobs of this database belong to role "${owner}", ` +
          `the role that installed order-automation: only that role (or a superuser) can change them there. Run this as "${owner}". Nothing changed.`,
      );
    }
    const changed = await cron.query(
      `select cron.alter_job(j.jobid, schedule => $3, active => $4) from cron.job j
        where j.jobname operator(pg_catalog.=) $1 and j.username operator(pg_catalog.=) $2`,
      [jobname, owner, schedule, active],
    );
    if (changed.rowCount === 0) {
      throw new PgCronJobMissingError(
        `job ${job} is missing from pg_cron (no job "${jobname}" of role "${owner}" in cron.job of database "${place.cronDatabase}"): nothing changed. ` +
          `Run order-automation migrate as "${owner}": it re-creates the missing jobs, keeping paused ones paused.`,
        { sqlstate: 'OA011' },
      );
    }
  });
}

export const pauseJob = (db: Db, job: JobName): Promise<void> => setSchedule(db, job, { active: false });
export const resumeJob = (db: Db, job: JobName): Promise<void> => setSchedule(db, job, { active: true });
