// The order_automation.job table is the one list of jobs. The TypeScript list (jobNames, the command
// line's job words) must equal it, and every place SQL dispatches on a job name must have a branch
// for exactly the jobs that run through it: the order jobs (run_due_orders: due_orders,
// process_orders, its own job check, job_status' orders due now) and none of the jobs that run a
// procedure of their own (purge_history).
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { jobNames } from '../src/index.js';
import { jobs, type JobName } from '../src/types.js';
import { cliInProcess } from './cli-in-process.js';
import { createTestDatabase, type TestDatabase } from './helpers.js';

let db: TestDatabase;
let tableJobs: { job: string; command: string }[];
beforeAll(async () => {
  db = await createTestDatabase();
  tableJobs = (
    await db.pool.query<{ job: string; command: string }>(
      'select job, order_automation.job_command(job) as command from order_automation.job',
    )
  ).rows;
});
afterAll(async () => db?.drop());

const sorted = (names: Iterable<string>) => [...names].sort();
const orderJobs = jobNames.filter((job) => jobs[job].dueOrders);
const ownProcedureJobs = jobNames.filter((job) => !jobs[job].dueOrders);

async function definition(signature: string): Promise<string> {
  const { rows } = await db.pool.query<{ def: string }>('select pg_get_functiondef($1::regprocedure) as def', [
    signature,
  ]);
  return rows[0]!.def;
}

/** The names a routine's CASE branches dispatch on: every `when '<name>'` of its definition. */
async function caseBranches(signature: string): Promise<string[]> {
  return sorted(new Set([...(await definition(signature)).matchAll(/\bwhen\s+'([^']*)'/g)].map((m) => m[1]!)));
}

/** SQLSTATE of what `sql` raises on a connection of its own, rolled back; undefined when it succeeds. */
async function raises(sql: string, values: unknown[]): Promise<string | undefined> {
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    return await client.query(sql, values).then(
      () => undefined,
      (error: pg.DatabaseError) => error.code,
    );
  } finally {
    await client.query('rollback');
    client.release();
  }
}

const cli = (argv: string[]) => cliInProcess(argv, db.url);

describe('the job list', () => {
  test('jobNames is exactly the rows of order_automation.job, and both kinds of job exist', () => {
    expect(sorted(jobNames)).toEqual(sorted(tableJobs.map((j) => j.job)));
    expect(orderJobs.length).toBeGreaterThan(0);
    expect(ownProcedureJobs.length).toBeGreaterThan(0);
  });

  test("each job's pg_cron command calls the procedure of its name; order jobs go through run_due_orders, the others not", async () => {
    for (const { job, command } of tableJobs) {
      expect(command).toBe(`CALL order_automation.${job}()`);
      const { rows } = await db.pool.query<{ signature: string }>(
        `select p.oid::regprocedure::text as signature from pg_proc p
          where p.pronamespace = 'order_automation'::regnamespace and p.proname = $1 and p.prokind = 'p'`,
        [job],
      );
      expect(rows, job).toHaveLength(1);
      const runsDueOrders = (await definition(rows[0]!.signature)).includes(`order_automation.run_due_orders('${job}'`);
      expect(runsDueOrders, job).toBe(jobs[job as JobName].dueOrders);
    }
  });

  test('due_orders and process_orders have a branch for exactly the order jobs, and raise for any other', async () => {
    expect(await caseBranches('order_automation.due_orders(text, timestamptz, integer, text[])')).toEqual(
      sorted(orderJobs),
    );
    expect(await caseBranches('order_automation.process_orders(text, text[])')).toEqual(sorted(orderJobs));
    for (const job of jobNames) {
      // A CASE without a branch for the job raises case_not_found (20000).
      const expected = jobs[job].dueOrders ? undefined : '20000';
      expect(await raises(`select order_automation.due_orders($1, now(), 1, '{}')`, [job]), job).toBe(expected);
      expect(await raises(`select order_automation.process_orders($1, '{}')`, [job]), job).toBe(expected);
    }
  });

  test("run_due_orders' job check accepts exactly the order jobs", async () => {
    const check = /run_due_orders\.job\s+operator\(pg_catalog\.=\)\s+any\s*\(\s*'\{([^}]*)\}'/.exec(
      await definition('order_automation.run_due_orders(text, timestamptz, integer, bigint)'),
    );
    expect(check, 'the job check of run_due_orders').not.toBeNull();
    expect(sorted(check![1]!.split(','))).toEqual(sorted(orderJobs));
    for (const job of ownProcedureJobs) {
      // Refused before the run is recorded or anything commits.
      expect(await raises('call order_automation.run_due_orders($1, null, null, null)', [job]), job).toBe('OA006');
    }
  });

  test('job_status has a row for every job, with orders due now exactly for the order jobs', async () => {
    const branches = await caseBranches('order_automation.job_status(timestamptz)');
    expect(branches.filter((name) => !jobNames.includes(name as JobName))).toEqual([]);
    expect(orderJobs.filter((job) => !branches.includes(job))).toEqual([]);
    expect(ownProcedureJobs.filter((job) => branches.includes(job))).toEqual([]);
    const { rows } = await db.pool.query<{ job: string; due_now: string | null }>(
      'select job, due_now from order_automation.job_status()',
    );
    expect(sorted(rows.map((r) => r.job))).toEqual(sorted(jobNames));
    for (const { job, due_now } of rows) expect(due_now !== null, job).toBe(jobs[job as JobName].dueOrders);
  });
});

describe('the command line', () => {
  test('run takes the short name of every job and runs that job, and lists exactly those names when refusing', async () => {
    const refused = await cli(['run', 'nosuch']);
    expect(refused.code).toBe(2);
    const listed = /^order-automation: run takes (.*), not "nosuch"\.\n/.exec(refused.stderr);
    expect(listed, refused.stderr).not.toBeNull();
    expect(listed![1]!.split(', ')).toEqual(jobNames.map((job) => jobs[job].alias));
    // With purge_cancelled_after NULL (keep), purge_cancelled_orders returns before recording a run.
    await db.pool.query(`update order_automation.settings set purge_cancelled_after = '1 day'`);
    for (const job of jobNames) {
      const ran = await cli(['run', jobs[job].alias]);
      expect(ran, job).toMatchObject({ code: 0, stdout: expect.stringMatching(/^\w+ 0 [\w ]+s\n$/), stderr: '' });
      const { rows } = await db.pool.query<{ job: string }>(
        'select job from order_automation.run order by id desc limit 1',
      );
      expect(rows[0]?.job, jobs[job].alias).toBe(job);
    }
  });

  test('schedule takes every job by its short or its full name, and lists the short names when refusing', async () => {
    const refused = await cli(['schedule', 'pause', 'nosuch']);
    expect(refused).toMatchObject({
      code: 2,
      stderr: `order-automation: schedule pause needs a job: ${jobNames.map((job) => jobs[job].alias).join(', ')}.\nRun order-automation --help for usage.\n`,
    });
    const active = async (job: string) =>
      (await db.pool.query<{ active: boolean }>('select active from order_automation.job where job = $1', [job]))
        .rows[0]!.active;
    for (const job of jobNames) {
      expect(await cli(['schedule', 'pause', job]), job).toMatchObject({ code: 0, stderr: '' });
      expect(await active(job), job).toBe(false);
      expect(await cli(['schedule', 'resume', jobs[job].alias]), job).toMatchObject({ code: 0, stderr: '' });
      expect(await active(job), job).toBe(true);
    }
  });
});
