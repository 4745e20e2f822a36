// When pg_cron fires a job next (status's next run), and the run log kept only history_retention long.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  nextFireTime,
  purgeHistory,
  cancelExpiredOrders,
  updateSettings,
  setSchedule,
  getStatus,
  InvalidArgumentError,
  scheduleProblem,
} from '../src/index.js';
import { cronDialect } from '../src/cron.js';
import { createTestDatabase, type TestDatabase } from './helpers.js';

describe('next fire time of a cron schedule (UTC, as pg_cron 1.4)', () => {
  const from = new Date('2026-11-25T13:07:30Z');
  test.each([
    ['* * * * *', '2026-11-25T13:08:00Z'],
    ['*/5 * * * *', '2026-11-25T13:10:00Z'],
    ['0 * * * *', '2026-11-25T14:00:00Z'],
    ['30 2 * * *', '2026-11-26T02:30:00Z'],
    ['0 0 1 * *', '2026-12-01T00:00:00Z'],
    ['0 9 * * 1-5', '2026-11-26T09:00:00Z'],
    ['15,45 13 * * *', '2026-11-25T13:15:00Z'],
    ['0 0 * * 0', '2026-11-29T00:00:00Z'],
    ['0 0 * * 7', '2026-11-29T00:00:00Z'],
    ['@daily', '2026-11-26T00:00:00Z'],
    // Month and weekday names, any case, also in ranges (every pg_cron reads them).
    ['0 9 * * mon-fri', '2026-11-26T09:00:00Z'],
    ['0 0 1 JAN,Jul *', '2027-01-01T00:00:00Z'],
    ['0 0 * * Sun', '2026-11-29T00:00:00Z'],
    // A day field starting with '*' lets the weekday decide alone, as in cron.
    ['0 0 */2 * mon', '2026-12-07T00:00:00Z'],
    // pg_cron 1.5: '$' is the last day of the month; 'N seconds' starts the job N seconds after its last start.
    ['0 12 $ * *', '2026-11-30T12:00:00Z'],
    ['0 0 $ feb *', '2027-02-28T00:00:00Z'],
    ['30 seconds', '2026-11-25T13:08:00Z'],
    ['1 second', '2026-11-25T13:07:31Z'],
  ])('%s fires next at %s', (schedule, next) => {
    expect(nextFireTime(schedule, from)?.toISOString()).toBe(new Date(next).toISOString());
  });
  test.each([
    '',
    'nonsense',
    '61 * * * *',
    '* * * *',
    '*/0 * * * *',
    '1/5 * * * *',
    '0 0 * * funday',
    '0 0 $ * * *',
    '60 seconds',
    '0 seconds',
    '@reboot',
    '@HOURLY',
  ])('%j is not a schedule it can read: null', (schedule) => {
    expect(nextFireTime(schedule, from)).toBeNull();
  });
});

describe('which pg_cron reads a schedule', () => {
  test.each([
    ['* * * * *', null, null],
    ['0 9 * * mon-fri', '1.4-1', null],
    ['30 seconds', '1.5', null],
    ['30 seconds', '1.6.4', null],
    ['0 0 $ * *', '1.5.2', null],
    ['30 seconds', '1.4-1', /needs pg_cron 1\.5 or later and this server has pg_cron 1\.4-1/],
    ['0 0 $ * *', '1.4-1', /needs pg_cron 1\.5 or later for "\$"/],
    ['30 seconds', null, /this server has no pg_cron/],
    ['every so often', '1.6', /is not a cron schedule pg_cron accepts/],
  ])('%j on pg_cron %s: %s', (schedule, version, problem) => {
    const found = scheduleProblem(schedule, version);
    if (problem === null) expect(found).toBeNull();
    else expect(found).toMatch(problem);
  });
});

describe('schedule and history in a database', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => db?.drop());

  test('the schedule of an unscheduled install is recorded, an unknown job refused (OA006)', async () => {
    await setSchedule(db.pool, 'cancel_expired_orders', { schedule: '*/10 * * * *', active: false });
    const job = (await getStatus(db.pool)).jobs.find((j) => j.job === 'cancel_expired_orders')!;
    expect(job).toMatchObject({ schedule: '*/10 * * * *', active: false, nextRunAt: null });
    await expect(setSchedule(db.pool, 'no_such_job' as never, { active: true })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
  });

  test("setSchedule on a Client inside BEGIN joins that transaction: a ROLLBACK undoes the caller's change and the schedule change alike", async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await client.query('begin');
      await client.query('update order_automation.settings set batch_size = 7');
      await setSchedule(client, 'confirm_shipped_orders', { schedule: '*/9 * * * *' });
      await client.query('rollback');
    } finally {
      await client.end();
    }
    expect((await db.pool.query('select batch_size from order_automation.settings')).rows[0].batch_size).toBe(500);
    const job = await db.pool.query(`select schedule from order_automation.job where job = 'confirm_shipped_orders'`);
    expect(job.rows[0].schedule).toBe('* * * * *');
  });

  test("a refused setSchedule on a Client inside BEGIN undoes only its own part: the caller's transaction goes on and commits", async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await client.query('begin');
      await client.query('update order_automation.settings set batch_size = 8');
      await expect(setSchedule(client, 'no_such_job' as never, { active: false })).rejects.toBeInstanceOf(
        InvalidArgumentError,
      );
      await client.query('commit');
    } finally {
      await client.end();
    }
    expect((await db.pool.query('select batch_size from order_automation.settings')).rows[0].batch_size).toBe(8);
    await db.pool.query('update order_automation.settings set batch_size = 500');
  });

  test("a schedule this server's pg_cron cannot read is refused (OA006) and nothing changes; one it reads is kept", async () => {
    const version = (
      await db.pool.query(`select default_version v from pg_available_extensions where name = 'pg_cron'`)
    ).rows[0]?.v as string | undefined;
    const before = (await getStatus(db.pool)).jobs.find((j) => j.job === 'confirm_shipped_orders')!.schedule;
    const seconds = setSchedule(db.pool, 'confirm_shipped_orders', { schedule: '30 seconds' });
    if (cronDialect(version ?? null).seconds) await seconds;
    else {
      await expect(seconds).rejects.toThrow(
        new RegExp(`needs pg_cron 1\\.5 or later and this server has pg_cron ${version}`),
      );
      await expect(seconds).rejects.toBeInstanceOf(InvalidArgumentError);
      expect((await getStatus(db.pool)).jobs.find((j) => j.job === 'confirm_shipped_orders')!.schedule).toBe(before);
    }
    await setSchedule(db.pool, 'confirm_shipped_orders', { schedule: '0 9 * * MON-fri' });
    expect((await getStatus(db.pool)).jobs.find((j) => j.job === 'confirm_shipped_orders')!.schedule).toBe(
      '0 9 * * MON-fri',
    );
    await setSchedule(db.pool, 'confirm_shipped_orders', { schedule: before });
  });

  test('purge_history deletes finished runs older than history_retention and keeps the rest', async () => {
    await cancelExpiredOrders(db.pool);
    await cancelExpiredOrders(db.pool);
    await db.pool.query(`update order_automation.run set started_at = started_at - interval '40 days'
                          where id = (select min(id) from order_automation.run)`);
    const before = Number((await db.pool.query('select count(*) n from order_automation.run')).rows[0].n);
    expect((await purgeHistory(db.pool)).purged).toBe(1);
    // The purge records its own run.
    expect(Number((await db.pool.query('select count(*) n from order_automation.run')).rows[0].n)).toBe(before);
    await updateSettings(db.pool, { historyRetention: '1 hour' });
    expect((await purgeHistory(db.pool)).purged).toBe(0);
  });
});
