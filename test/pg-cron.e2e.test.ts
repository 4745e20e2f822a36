// The real schedule, end to end: pg_cron itself (not a CALL of ours) cancels an unpaid order and
// confirms a shipped one, in two databases of one cluster at once, on the next minute's tick; then
// processes orders due at spread-out instants within a second of their deadlines, across a tick.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { inject } from 'vitest';
import { getStatus, migrate, pauseJob, resumeJob, setSchedule } from '../src/index.js';
import { databaseUrl } from './setup/urls.js';
import { balanceOf, createTestDatabase, one, seedBookstore, stockOf, type TestDatabase } from './helpers.js';
import { newClient } from './setup/connections.js';
import { latenessOf, percentile, placeDueAt, scheduledConnections, sleep } from './precision-support.js';

const shops: TestDatabase[] = [];

beforeAll(async () => {
  for (let i = 0; i < 2; i++) {
    const db = await createTestDatabase();
    shops.push(db);
    // The template was installed without a schedule; migrating again schedules the jobs.
    await migrate(db.url);
    await seedBookstore(db.pool, { stock: 1000, balance: 100_000 });
  }
});

afterAll(async () => {
  for (const db of shops) {
    await migrate(db.url, { direction: 'down', confirm: true }).catch(() => undefined);
    await db.drop();
  }
});

describe('pg_cron runs the automation on its own', () => {
  test('on the next tick an overdue unpaid order is cancelled (stock back) and an overdue shipped one confirmed (seller paid), in two databases', async () => {
    for (const db of shops) {
      await db.pool.query(
        `select order_automation.place_order('late', 'buyer1', 'store1', '[{"book_id":"book1","count":4,"price":25}]')`,
      );
      await db.pool.query(`update new_order set pay_deadline = now() - interval '1 minute' where order_id = 'late'`);
      await db.pool.query(
        `select order_automation.place_order('sent', 'buyer2', 'store2', '[{"book_id":"book2","count":2,"price":50}]')`,
      );
      await db.pool.query(`select order_automation.pay_order('sent'), order_automation.ship_order('sent')`);
      await db.pool.query(
        `update new_order set receipt_deadline = now() - interval '1 minute' where order_id = 'sent'`,
      );
      expect(await stockOf(db.pool, 'store1', 'book1')).toBe(996);
    }

    // Both databases' jobs are in pg_cron, under names that cannot collide.
    const cronDb = newClient({ connectionString: databaseUrl(inject('serverUrl'), inject('cronDatabase')) });
    await cronDb.connect();
    try {
      const jobs = await cronDb.query<{ jobname: string; database: string; schedule: string; active: boolean }>(
        'select jobname, database, schedule, active from cron.job where database = any($1) order by jobname',
        [shops.map((s) => s.name)],
      );
      expect(jobs.rows).toHaveLength(8);
      expect(new Set(jobs.rows.map((j) => j.jobname)).size).toBe(8);
      expect(jobs.rows.every((j) => j.active)).toBe(true);
      expect(
        jobs.rows
          .filter((j) => /(cancel_expired|confirm_shipped)_orders/.test(j.jobname))
          .every((j) => j.schedule === '* * * * *'),
      ).toBe(true);

      // Wait for the tick (at most a minute, plus the run itself).
      const deadline = Date.now() + 100_000;
      const done = async (db: TestDatabase) =>
        (
          await db.pool.query(
            `select count(*)::int n from new_order where (order_id = 'late' and state = 4) or (order_id = 'sent' and state = 3)`,
          )
        ).rows[0].n === 2;
      while (Date.now() < deadline && !(await Promise.all(shops.map(done))).every(Boolean)) {
        await new Promise((r) => setTimeout(r, 1000));
      }

      for (const db of shops) {
        expect(await one(db.pool, `select state from new_order where order_id = 'late'`)).toEqual({ state: 4 });
        expect(await one(db.pool, `select state from new_order where order_id = 'sent'`)).toEqual({ state: 3 });
        expect(await stockOf(db.pool, 'store1', 'book1')).toBe(1000);
        expect(await balanceOf(db.pool, 'seller2')).toBe(100);
        const causes = await db.pool.query(
          `select order_id, cause from order_automation.order_event where cause like '%_timeout' order by order_id`,
        );
        expect(causes.rows).toEqual([
          { order_id: 'late', cause: 'payment_timeout' },
          { order_id: 'sent', cause: 'receipt_timeout' },
        ]);
        const status = await getStatus(db.pool);
        for (const job of status.jobs.filter(
          (j) => j.job === 'cancel_expired_orders' || j.job === 'confirm_shipped_orders',
        )) {
          expect(job.active).toBe(true);
          expect(job.lastRun?.error ?? null).toBeNull();
        }
        // However many ticks came, the one order of each job was processed once, by one of them.
        const processed = await db.pool.query<{ job: string; processed: number }>(
          `select job, sum(processed)::int processed from order_automation.run
            where job in ('cancel_expired_orders', 'confirm_shipped_orders') group by job order by job`,
        );
        expect(processed.rows).toEqual([
          { job: 'cancel_expired_orders', processed: 1 },
          { job: 'confirm_shipped_orders', processed: 1 },
        ]);
      }
      const runs = await cronDb.query<{ jobname: string; status: string }>(
        `select j.jobname, d.status from cron.job_run_details d join cron.job j using (jobid)
        where j.database = any($1)`,
        [shops.map((s) => s.name)],
      );
      // pg_cron itself ran both jobs in both databases: at each tick one of the two is the database's
      // waiter (still running until just past the next tick) and the other returns at once.
      const ranJobs = new Set(runs.rows.map((r) => r.jobname));
      expect([...ranJobs].filter((name) => /(cancel_expired|confirm_shipped)_orders@/.test(name)).sort()).toEqual(
        shops
          .flatMap((s) => [
            `order_automation.cancel_expired_orders@${s.name}`,
            `order_automation.confirm_shipped_orders@${s.name}`,
          ])
          .sort(),
      );
      // Schedule control from the app's database reaches pg_cron's: change, pause, resume, refuse.
      const [shop] = shops;
      const cronJob = async () =>
        (
          await cronDb.query<{ schedule: string; active: boolean }>(
            'select schedule, active from cron.job where jobname = $1',
            [`order_automation.cancel_expired_orders@${shop!.name}`],
          )
        ).rows[0];
      await setSchedule(shop!.pool, 'cancel_expired_orders', { schedule: '*/7 * * * *' });
      expect(await cronJob()).toEqual({ schedule: '*/7 * * * *', active: true });
      await pauseJob(shop!.pool, 'cancel_expired_orders');
      expect(await cronJob()).toEqual({ schedule: '*/7 * * * *', active: false });
      expect((await getStatus(shop!.pool)).jobs.find((j) => j.job === 'cancel_expired_orders')).toMatchObject({
        active: false,
        nextRunAt: null,
      });
      await resumeJob(shop!.pool, 'cancel_expired_orders');
      const resumed = (await getStatus(shop!.pool)).jobs.find((j) => j.job === 'cancel_expired_orders')!;
      expect(resumed.active).toBe(true);
      expect(resumed.nextRunAt!.getUTCMinutes() % 7).toBe(0);
      await expect(setSchedule(shop!.pool, 'cancel_expired_orders', { schedule: 'every so often' })).rejects.toThrow(
        /not a cron schedule pg_cron accepts/,
      );
      expect(await cronJob()).toEqual({ schedule: '*/7 * * * *', active: true });
      expect(
        (await shop!.pool.query(`select schedule from order_automation.job where job = 'cancel_expired_orders'`))
          .rows[0].schedule,
      ).toBe('*/7 * * * *');
      expect(runs.rows.every((r) => r.status === 'succeeded' || r.status === 'running')).toBe(true);
    } finally {
      await cronDb.end();
    }
  }, 130_000);
});

describe('deadline precision on the real schedule', () => {
  // Runs after the test above, whose first tick started each database's waiter.
  test('orders due at spread-out instants over 100 s, across a tick, are processed within a second of their deadlines (p99 ≤ 1 s, none over 2 s), in both databases, each on one waiting connection', async () => {
    const [shop] = shops;
    await setSchedule(shop!.pool, 'cancel_expired_orders', { schedule: '* * * * *' });
    // 40 unpaid and 40 shipped orders per database, one due every 1.25 s, the databases interleaved.
    const start = Date.now() + 3_000;
    for (const [d, db] of shops.entries()) {
      const at = Array.from({ length: 80 }, (_, i) => new Date(start + i * 1_250 + d * 625));
      await placeDueAt(db.pool, 'spread', {
        unpaid: at.filter((_, i) => i % 2 === 0),
        shipped: at.filter((_, i) => i % 2 === 1),
      });
    }
    const connections: number[][] = shops.map(() => []);
    const deadline = start + 100_000 + 20_000;
    for (;;) {
      const pending = await Promise.all(shops.map(async (db) => (await latenessOf(db.pool, 'spread')).pending));
      if (pending.every((n) => n === 0) || Date.now() > deadline) break;
      for (const [d, db] of shops.entries()) connections[d]!.push(await scheduledConnections(db.pool));
      await sleep(1_000);
    }
    const ms = (await Promise.all(shops.map((db) => latenessOf(db.pool, 'spread')))).flatMap((l) => {
      expect(l.pending).toBe(0);
      return l.ms;
    });
    const figures = { p50: percentile(ms, 50), p99: percentile(ms, 99), max: Math.max(...ms) };
    const cronDb = new pg.Client({ connectionString: databaseUrl(inject('serverUrl'), inject('cronDatabase')) });
    await cronDb.connect();
    const version = (await cronDb.query(`select extversion from pg_extension where extname = 'pg_cron'`)).rows[0];
    await cronDb.end();
    console.log(
      `[pg_cron ${version?.extversion}] lateness of ${ms.length} orders over 100 s (ms): ${JSON.stringify(figures)}`,
    );
    expect(ms).toHaveLength(160);
    expect(figures.p99).toBeLessThanOrEqual(1_000);
    expect(figures.max).toBeLessThanOrEqual(2_000);
    expect(Math.min(...ms)).toBeGreaterThanOrEqual(0);
    // One connection waits per database (at a tick the next run may show for an instant).
    for (const samples of connections) expect(percentile(samples, 50)).toBe(1);
  }, 150_000);
});
