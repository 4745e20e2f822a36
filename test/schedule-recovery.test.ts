// The jobs in pg_cron's other database survive what goes wrong: a down that fails leaves them as they
// were, jobs lost from cron.job are reported as missing, refused by pause and resume, and re-created by
// migrate (a paused one paused), and schedule control never commits a transaction of the caller's.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { getStatus, migrate, pauseJob, PgCronJobMissingError, resumeJob, setSchedule } from '../src/index.js';
import { createTestDatabase, type TestDatabase } from './helpers.js';
import { databaseUrl } from './setup/urls.js';

let db: TestDatabase;
let cron: pg.Client;

beforeAll(async () => {
  db = await createTestDatabase();
  cron = new pg.Client({ connectionString: databaseUrl(inject('serverUrl'), inject('cronDatabase')) });
  await cron.connect();
  await migrate(db.url); // pg_cron lives in another database of the test server: scheduled from there
});
afterAll(async () => {
  await cron.query('select cron.unschedule(jobid) from cron.job where database = $1', [db.name]).catch(() => undefined);
  await cron.end();
  await db?.drop();
});

async function jobs(): Promise<{ jobname: string; active: boolean; schedule: string }[]> {
  const { rows } = await cron.query(
    'select jobname, active, schedule from cron.job where database = $1 order by jobname',
    [db.name],
  );
  return rows;
}

const name = (job: string) => `order_automation.${job}@${db.name}`;

describe('jobs in pg_cron survive what goes wrong', () => {
  test('a down that fails (an app table references new_order) leaves every job in pg_cron as it was; a down by one keeps them', async () => {
    const before = await jobs();
    expect(before).toHaveLength(4);
    await db.pool.query('create table public.app_ref (order_id text references public.new_order)');
    try {
      await expect(migrate(db.url, { direction: 'down' })).rejects.toThrow(/depend/);
      expect(await jobs()).toEqual(before);
    } finally {
      await db.pool.query('drop table public.app_ref');
    }
    await migrate(db.url, { direction: 'down', count: 1 });
    expect(await jobs()).toEqual(before);
    await migrate(db.url);
    expect(await jobs()).toEqual(before);
  });

  test('jobs gone from pg_cron: status says missing, pause and resume fail loudly, migrate re-creates them, a paused one paused', async () => {
    await pauseJob(db.url, 'purge_history');
    await cron.query('select cron.unschedule(jobname) from cron.job where jobname = any ($1)', [
      [name('purge_history'), name('confirm_shipped_orders')],
    ]);
    const status = await getStatus(db.url);
    expect(Object.fromEntries(status.jobs.map((j) => [j.job, j.pgCron]))).toEqual({
      cancel_expired_orders: 'active',
      confirm_shipped_orders: 'missing',
      purge_cancelled_orders: 'active',
      purge_history: 'missing',
    });
    await expect(resumeJob(db.url, 'confirm_shipped_orders')).rejects.toBeInstanceOf(PgCronJobMissingError);
    await expect(pauseJob(db.url, 'purge_history')).rejects.toThrow(/missing from pg_cron/);
    // Refused whole: the recorded state did not change either.
    const recorded = await db.pool.query(`select job, active from order_automation.job order by job`);
    expect(recorded.rows.map((r) => r.active)).toEqual([true, true, true, false]);

    await migrate(db.url);
    const back = await jobs();
    expect(back.map((j) => [j.jobname, j.active])).toEqual([
      [name('cancel_expired_orders'), true],
      [name('confirm_shipped_orders'), true],
      [name('purge_cancelled_orders'), true],
      [name('purge_history'), false],
    ]);
    await resumeJob(db.url, 'purge_history');
    expect((await getStatus(db.url)).jobs.every((j) => j.pgCron === 'active')).toBe(true);
  });

  test("setSchedule on a Client inside BEGIN refuses when pg_cron lives in another database, and leaves the caller's transaction as it was", async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await client.query('begin');
      await client.query('update order_automation.settings set batch_size = 77');
      await expect(setSchedule(client, 'cancel_expired_orders', { schedule: '*/9 * * * *' })).rejects.toThrow(
        /cannot join your transaction/,
      );
      // Still the caller's, still usable: its own change commits.
      await client.query('commit');
    } finally {
      await client.end();
    }
    expect((await db.pool.query('select batch_size from order_automation.settings')).rows[0].batch_size).toBe(77);
    expect((await jobs()).find((j) => j.jobname === name('cancel_expired_orders'))?.schedule).toBe('* * * * *');
  });
});
