// "Migrations are append-only; an upgraded install passes the same tests": install the first
// release only, write data through the lifecycle, then apply every later migration one at a time
// (however many there are), writing more data after each, and check that nothing written before was
// lost or changed and that the automation still processes old and new orders alike.
import { readdirSync } from 'node:fs';
import pg from 'pg';
import { afterAll, expect, inject, test } from 'vitest';
import { migrate, migrationsDir } from '../../src/index.js';
import { databaseUrl } from '../setup/urls.js';
import { conserved, createTestDatabase, seedBookstore, type TestDatabase } from '../helpers.js';
import { applyTestSql, expectConserved, expectInvariants, openFigures, statesOf } from './support.js';
import { newClient } from '../setup/connections.js';

const tally = openFigures(import.meta.url);
const created: TestDatabase[] = [];
afterAll(async () => {
  for (const db of created) {
    // The jobs this test scheduled in the shared pg_cron go with the database.
    const cron = newClient({ connectionString: databaseUrl(inject('serverUrl'), inject('cronDatabase')) });
    await cron.connect();
    await cron
      .query('select cron.unschedule(jobid) from cron.job where database = $1', [db.name])
      .catch(() => undefined);
    await cron.end();
    await db.drop();
  }
});

/** Every migration, in order: the releases an install goes through. */
const migrations = readdirSync(migrationsDir)
  .filter((f) => /^\d+_.*\.ts$/.test(f) && !f.endsWith('.d.ts'))
  .sort()
  .map((f) => f.replace(/\.ts$/, ''));

/**
 * What the first release's lifecycle wrote, read with only the first release's columns: it must read
 * the same after every upgrade (new columns may be added, old values never change).
 */
async function firstReleaseData(db: pg.Pool): Promise<string[]> {
  const { rows } = await db.query<{ line: string }>(`
    select line from (
      select 'order ' || concat_ws(' ', order_id, user_id, store_id, state, created_at, paid_at, shipped_at, received_at, cancelled_at, pay_deadline, receipt_deadline) as line from public.new_order
      union all select 'line ' || concat_ws(' ', order_id, book_id, count, price) from public.new_order_detail
      union all select 'user ' || concat_ws(' ', user_id, balance) from public."user"
      union all select 'store ' || concat_ws(' ', store_id, book_id, stock_level) from public.store
      union all select 'event ' || concat_ws(' ', id, order_id, from_state, to_state, cause, at) from order_automation.order_event
      union all select 'run ' || concat_ws(' ', id, job, as_of, batch_size, started_at, finished_at, processed, failed, error) from order_automation.run
      union all select 'settings ' || concat_ws(' ', payment_timeout, receipt_timeout, batch_size, max_run_time) from order_automation.settings
    ) x order by line`);
  return rows.map((r) => r.line);
}

/** A round of the lifecycle through SQL calls every release has: placed, paid, shipped, received, cancelled, and due ones. */
async function lifecycleRound(db: pg.Pool, round: string): Promise<void> {
  const place = (id: string, buyer: string, store: string, book: string, count: number) =>
    db.query('select order_automation.place_order($1, $2, $3, $4::jsonb)', [
      id,
      buyer,
      store,
      JSON.stringify([{ book_id: book, count, price: 125 }]),
    ]);
  for (let i = 1; i <= 8; i++)
    await place(`${round}_${i}`, `buyer${1 + (i % 3)}`, `store${1 + (i % 2)}`, `book${1 + (i % 3)}`, i);
  await db.query('select order_automation.pay_order($1)', [`${round}_1`]);
  await db.query('select order_automation.pay_order($1), order_automation.ship_order($1)', [`${round}_2`]);
  await db.query(
    'select order_automation.pay_order($1), order_automation.ship_order($1), order_automation.confirm_receipt($1)',
    [`${round}_3`],
  );
  await db.query('select order_automation.cancel_order($1)', [`${round}_4`]);
  await db.query('select order_automation.pay_order($1), order_automation.cancel_order($1)', [`${round}_5`]);
  // Due: 6 and 7 unpaid past their deadline, 8 shipped past its receipt deadline.
  await db.query('select order_automation.pay_order($1), order_automation.ship_order($1)', [`${round}_8`]);
  await db.query(`update public.new_order set pay_deadline = now() - interval '1 minute' where order_id in ($1, $2)`, [
    `${round}_6`,
    `${round}_7`,
  ]);
  await db.query(`update public.new_order set receipt_deadline = now() - interval '1 minute' where order_id = $1`, [
    `${round}_8`,
  ]);
}

test('an install of the first release, upgraded one migration at a time to the current one, keeps every row it wrote and runs the automation on old and new orders', async () => {
  expect(migrations.length).toBeGreaterThanOrEqual(1);
  const db = await createTestDatabase({ template: null });
  created.push(db);
  // The first release, scheduled like a real install (pg_cron lives in another database of the server).
  expect((await migrate(db.url, { count: 1 })).migrations).toEqual([migrations[0]]);
  await seedBookstore(db.pool, { buyers: 3, stores: 2, books: 3, balance: 1_000_000, stock: 10_000 });
  await db.pool.query(`update order_automation.settings set payment_timeout = '17 minutes', batch_size = 3`);
  await lifecycleRound(db.pool, 'r1');
  await db.pool.query(`call order_automation.cancel_expired_orders(as_of => now() + interval '2 minutes')`);
  await lifecycleRound(db.pool, 'r1b'); // due again, left for after the upgrade
  const before = await conserved(db.pool);

  for (const [k, name] of migrations.slice(1).entries()) {
    const written = await firstReleaseData(db.pool);
    expect((await migrate(db.url, { count: 1 })).migrations).toEqual([name]);
    tally.inputsTried++;
    // Nothing written before this upgrade changed; the lifecycle still works after it.
    expect(await firstReleaseData(db.pool)).toEqual(written);
    await lifecycleRound(db.pool, `r${k + 2}`);
  }
  expect((await migrate(db.url)).migrations).toEqual([]); // up to date
  await applyTestSql(db.pool);
  await expectConserved(db.pool, before, tally);

  // The current release processes what every release left due: old orders and new ones alike.
  const cancelled = Number(
    (await db.pool.query<{ cancelled: string }>('call order_automation.cancel_expired_orders()')).rows[0]!.cancelled,
  );
  const confirmed = Number(
    (await db.pool.query<{ confirmed: string }>('call order_automation.confirm_shipped_orders()')).rows[0]!.confirmed,
  );
  // Two unpaid orders due per round but the first (cancelled before the upgrade), a shipped one per round.
  expect(cancelled).toBe(2 * migrations.length);
  expect(confirmed).toBe(migrations.length + 1);
  for (const round of ['r1', 'r1b', `r${migrations.length}`]) {
    expect(await statesOf(db.pool, `${round}_`), round).toEqual({ 1: 1, 2: 1, 3: 2, 4: 4 });
  }
  const settings = (
    await db.pool.query<{ payment_timeout: string; batch_size: number }>(
      'select payment_timeout::text, batch_size from order_automation.settings',
    )
  ).rows[0];
  expect(settings).toEqual({ payment_timeout: '00:17:00', batch_size: 3 });
  await expectInvariants(db.pool, tally);
  await expectConserved(db.pool, before, tally);

  // Every job of the current release is scheduled in pg_cron, once, active.
  const { rows: jobs } = await db.pool.query<{ jobname: string }>(
    'select order_automation.cron_jobname(job) as jobname from order_automation.job',
  );
  const cron = newClient({ connectionString: databaseUrl(inject('serverUrl'), inject('cronDatabase')) });
  await cron.connect();
  try {
    const { rows } = await cron.query<{ jobname: string; active: boolean }>(
      'select jobname, active from cron.job where database = $1',
      [db.name],
    );
    expect(rows.map((r) => r.jobname).sort()).toEqual(jobs.map((j) => j.jobname).sort());
  } finally {
    await cron.end();
  }
});
