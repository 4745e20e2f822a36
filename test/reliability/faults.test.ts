// The automation under faults: a run's backend killed mid-batch, the whole server stopped with
// `pg_ctl -m immediate` mid-run, orders the bookkeeping fails for, and locks nobody releases.
// Each time: nothing half-applied, the failure visible where a user looks, and the next run done.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cancelExpiredOrders, confirmShippedOrders, migrate } from '../../src/index.js';
import { conserved, seedBookstore, type TestDatabase } from '../helpers.js';
import { ownServer } from './own-server.js';
import {
  applyTestSql,
  bulkOrders,
  type Conserved,
  expectConserved,
  expectInvariants,
  invariantBreaches,
  openFigures,
  parallel,
  type Shop,
  reliabilityDatabase,
  sleep,
  sqlstateOf,
  statesOf,
} from './support.js';
import { newClient, newPool } from '../setup/connections.js';

const tally = openFigures(import.meta.url);
const shop: Shop = { buyers: 12, stores: 6, books: 6 };
type Job = 'cancel_expired_orders' | 'confirm_shipped_orders';
const jobs: [Job, 'unpaid' | 'shipped', number, number][] = [
  ['cancel_expired_orders', 'unpaid', 0, 4],
  ['confirm_shipped_orders', 'shipped', 2, 3],
];
const causeOf = (job: Job) => (job === 'cancel_expired_orders' ? 'payment_timeout' : 'receipt_timeout');

/**
 * An app's own statement trigger that, in a session that asks for it (reliability.slow_after = n),
 * lets n batches of the automation commit and then sleeps inside the next one, after the lifecycle's
 * bookkeeping of that batch is done: the moment a fault does the most harm. Other sessions (pg_cron's)
 * are never slowed.
 */
const slowBatchTrigger = `
  create function public.reliability_slow_batch() returns trigger language plpgsql as $$
  declare
    allowed integer := nullif(current_setting('reliability.slow_after', true), '')::integer;
    batches integer;
  begin
    if allowed is null or coalesce(current_setting('order_automation.cause', true), '') not in ('payment_timeout', 'receipt_timeout') then
      return null;
    end if;
    batches := coalesce(nullif(current_setting('reliability.batches', true), ''), '0')::integer + 1;
    perform set_config('reliability.batches', batches::text, false);
    if batches > allowed then
      perform pg_sleep(600);
    end if;
    return null;
  end $$;
  create trigger zz_reliability_slow_batch after update on public.new_order
    for each statement execute function public.reliability_slow_batch();`;

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number, everyMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting ${timeoutMs} ms for ${what}`);
    await sleep(everyMs);
  }
}

/** The backend running `call order_automation.<job>`, found by its query text, once it sleeps in a batch. */
async function sleepingRunner(db: pg.Pool, job: Job): Promise<number | undefined> {
  const { rows } = await db.query<{ pid: number }>(
    `
    select pid from pg_stat_activity
     where datname = current_database() and pid <> pg_backend_pid()
       and query ilike '%call order_automation.' || $1 || '%' and wait_event = 'PgSleep'`,
    [job],
  );
  return rows[0]?.pid;
}

/** The longest lock_timeout the package's routines set for themselves, in ms (null: none). */
async function packageLockTimeoutMs(db: pg.Pool): Promise<number | null> {
  const { rows } = await db.query<{ ms: number | null }>(`
    select extract(epoch from max(split_part(c, '=', 2)::interval))::float8 * 1000 as ms
      from pg_proc p, unnest(p.proconfig) c
     where p.pronamespace = 'order_automation'::regnamespace and c like 'lock_timeout=%'`);
  return rows[0]!.ms;
}

async function deadlocks(db: pg.Pool): Promise<number> {
  return Number(
    (await db.query<{ n: string }>('select deadlocks n from pg_stat_database where datname = current_database()'))
      .rows[0]!.n,
  );
}

async function eventsOf(db: pg.Pool, prefix: string, cause: string): Promise<number> {
  const { rows } = await db.query<{ n: string }>(
    `select count(*) n from order_automation.order_event where starts_with(order_id, $1) and cause = $2`,
    [prefix, cause],
  );
  return Number(rows[0]!.n);
}

async function sellerBalances(db: pg.Pool | pg.ClientBase): Promise<Record<string, number>> {
  const { rows } = await db.query<{ user_id: string; balance: string }>(
    `select user_id, balance from "user" where user_id like 'seller%'`,
  );
  return Object.fromEntries(rows.map((r) => [r.user_id, Number(r.balance)]));
}

// ── the crashed server: started first, checked last, so pg_cron's next tick comes while the rest runs ──

interface CrashOutcome {
  committedBeforeCrash: number;
  callError: string;
  afterRestart: {
    states: Record<string, number>;
    breaches: Record<string, number>;
    conserved: boolean;
    run: { processed: string; finished_at: Date | null } | undefined;
    jobs: { jobname: string; active: boolean }[];
    /** pg_cron's names of the jobs the package installs. */
    installedJobs: string[];
  };
  tick: {
    cronRuns: { jobname: string; status: string }[];
    due: number;
    breaches: Record<string, number>;
    conserved: boolean;
    runs: { job: string; processed: string; error: string | null }[];
    waitedMs: number;
  };
}

const sameConserved = (a: Conserved, b: Conserved) =>
  a.money === b.money &&
  Object.keys(a.stock).length === Object.keys(b.stock).length &&
  Object.keys(a.stock).every((k) => a.stock[k] === b.stock[k]);

async function crashScenario(): Promise<CrashOutcome> {
  const server = await ownServer();
  let pool = newPool({ connectionString: server.url, max: 4 });
  try {
    await migrate(server.url); // this is pg_cron's database: the jobs are scheduled here, every minute
    await applyTestSql(pool);
    await seedBookstore(pool, { ...shop, balance: 1_000_000_000_000, stock: 10_000_000 });
    // Due only tomorrow: pg_cron's ticks (as of now) leave them to the run we crash (as of the day after).
    await bulkOrders(pool, { ...shop, prefix: 'crash_', count: 5000, due: false });
    await bulkOrders(pool, { ...shop, prefix: 'crash_shipped_', count: 500, due: false, state: 'shipped' });
    await pool.query(slowBatchTrigger);
    const before = await conserved(pool);

    const runner = newClient({ connectionString: server.url });
    await runner.connect();
    // This cluster commits asynchronously (it is thrown away): the run's own commits must reach
    // the WAL before they return, as on any real server, for "committed batches survive" to hold.
    await runner.query(`set reliability.slow_after = '3'; set synchronous_commit = on`);
    const call = runner
      .query(`call order_automation.cancel_expired_orders(as_of => now() + interval '2 days', batch_size => 500)`)
      .then(
        () => 'the run finished',
        (error: unknown) => (error as Error).message,
      );
    await until(
      'the run to sleep in its fourth batch',
      async () => (await sleepingRunner(pool, 'cancel_expired_orders')) !== undefined,
      30_000,
    );
    await pool.end();
    await server.crash();
    tally.faultsInjected++;
    const callError = await call;
    await runner.end().catch(() => undefined);
    await server.start();

    pool = newPool({ connectionString: server.url, max: 4 });
    const restartedAt = (await pool.query<{ now: Date }>('select now()')).rows[0]!.now;
    const afterRestart = {
      states: await statesOf(pool, 'crash_'),
      breaches: await invariantBreaches(pool),
      conserved: sameConserved(before, await conserved(pool)),
      run: (
        await pool.query<{ processed: string; finished_at: Date | null }>(
          `select processed, finished_at from order_automation.run where job = 'cancel_expired_orders' order by id desc limit 1`,
        )
      ).rows[0],
      jobs: (
        await pool.query<{ jobname: string; active: boolean }>(
          `select jobname, active from cron.job where database = current_database() order by jobname`,
        )
      ).rows,
      installedJobs: (
        await pool.query<{ jobname: string }>(
          'select order_automation.cron_jobname(job) as jobname from order_automation.job order by 1',
        )
      ).rows.map((r) => r.jobname),
    };

    // What the crashed run left, and the shipped orders, due now: pg_cron's next tick must do them.
    await pool.query(
      `update new_order set pay_deadline = now() - interval '1 minute' where state = 0 and starts_with(order_id, 'crash_')`,
    );
    await pool.query(
      `update new_order set receipt_deadline = now() - interval '1 minute' where state = 2 and starts_with(order_id, 'crash_')`,
    );
    const madeDueAt = (await pool.query<{ now: Date }>('select now()')).rows[0]!.now;
    const dueLeft = async () =>
      Number(
        (
          await pool.query<{ n: string }>(`
      select count(*) n from new_order where starts_with(order_id, 'crash_') and state in (0, 2)`)
        ).rows[0]!.n,
      );
    const finishedRuns = async () =>
      (
        await pool.query<{ job: string; processed: string; error: string | null }>(
          `
      select job, processed, error from order_automation.run
       where started_at > $1 and finished_at is not null and job in ('cancel_expired_orders', 'confirm_shipped_orders')`,
          [madeDueAt],
        )
      ).rows;
    const cronRuns = async () =>
      (
        await pool.query<{ jobname: string; status: string }>(
          `
        select j.jobname, d.status from cron.job_run_details d join cron.job j using (jobid)
         where d.start_time > $1 and j.database = current_database()`,
          [restartedAt],
        )
      ).rows;
    // pg_cron 1.4 ticks on the minute: at most a minute, plus the run itself. pg_cron marks a run
    // succeeded only after the procedure has returned; one of the two runs of a tick is the database's
    // waiter, which returns just past the next tick: wait for the other, and for the waiter to run.
    const bothRan = async () =>
      new Set(
        (await cronRuns())
          .filter(
            (r) =>
              (r.status === 'succeeded' || r.status === 'running') &&
              /(cancel_expired|confirm_shipped)_orders@/.test(r.jobname),
          )
          .map((r) => r.jobname),
      ).size === 2;
    await until(
      'pg_cron to run both jobs after the restart',
      async () => {
        const runs = await finishedRuns();
        return new Set(runs.map((r) => r.job)).size === 2 && (await dueLeft()) === 0 && (await bothRan());
      },
      90_000,
      500,
    );
    const tick = {
      cronRuns: await cronRuns(),
      due: await dueLeft(),
      breaches: await invariantBreaches(pool),
      conserved: sameConserved(before, await conserved(pool)),
      runs: await finishedRuns(),
      waitedMs: Date.now() - restartedAt.getTime(),
    };
    return { committedBeforeCrash: 3 * 500, callError, afterRestart, tick };
  } finally {
    await pool.end().catch(() => undefined);
    await server.stop();
  }
}

let crash: Promise<CrashOutcome>;
let db: TestDatabase;

beforeAll(async () => {
  crash = crashScenario();
  crash.catch(() => undefined); // awaited by its test
  db = await reliabilityDatabase();
  await seedBookstore(db.pool, { ...shop, balance: 1_000_000_000_000, stock: 10_000_000 });
  await db.pool.query(slowBatchTrigger);
});
afterAll(async () => {
  await crash?.catch(() => undefined);
  await db?.drop();
});

describe('a run killed mid-batch', () => {
  test.each(jobs)(
    '%s killed with pg_terminate_backend mid-batch leaves nothing half-applied, stays visible as unfinished, and the next run finishes the work',
    async (job, state, fromState, toState) => {
      const prefix = `kill_${state}_`;
      const count = 3000;
      await bulkOrders(db.pool, { ...shop, prefix, count, due: true, state, lines: 2 });
      const before = await conserved(db.pool);
      const sellers = await sellerBalances(db.pool);

      const runner = newClient({ connectionString: db.url });
      await runner.connect();
      await runner.query(`set reliability.slow_after = '2'`);
      const call = runner.query(`call order_automation.${job}(batch_size => 500)`).then(
        () => undefined,
        (error: unknown) => error,
      );
      let pid: number | undefined;
      await until(
        'the run to sleep in its third batch',
        async () => (pid = await sleepingRunner(db.pool, job)) !== undefined,
        20_000,
      );
      // Its third batch is booked but not committed: kill it there.
      await db.pool.query('select pg_terminate_backend($1)', [pid]);
      tally.faultsInjected++;
      expect(sqlstateOf(await call) ?? String(await call)).toMatch(/57P01|terminat/);
      await runner.end().catch(() => undefined);
      await until(
        'the killed backend to be gone',
        async () => (await db.pool.query('select from pg_stat_activity where pid = $1', [pid])).rowCount === 0,
        10_000,
      );

      // Two batches committed, the third rolled back whole.
      expect(await statesOf(db.pool, prefix)).toEqual({ [fromState]: count - 1000, [toState]: 1000 });
      const {
        rows: [killed],
      } = await db.pool.query<{ processed: string; finished_at: Date | null; error: string | null }>(
        'select processed, finished_at, error from order_automation.run where job = $1 order by id desc limit 1',
        [job],
      );
      expect(killed).toEqual({ processed: '1000', finished_at: null, error: null });
      await expectInvariants(db.pool, tally);
      await expectConserved(db.pool, before, tally);

      // The next run (another session: no slow trigger) does the rest, each order once.
      const next =
        job === 'cancel_expired_orders'
          ? (await cancelExpiredOrders(db.pool, { batchSize: 500 })).cancelled
          : (await confirmShippedOrders(db.pool, { batchSize: 500 })).confirmed;
      expect(next).toBe(count - 1000);
      expect(await statesOf(db.pool, prefix)).toEqual({ [toState]: count });
      tally.expectNone(
        'each order processed once across the killed run and the next',
        Math.abs((await eventsOf(db.pool, prefix, causeOf(job))) - count),
      );
      if (job === 'confirm_shipped_orders') {
        const paid = await sellerBalances(db.pool);
        const {
          rows: [total],
        } = await db.pool.query<{ n: string }>(
          `
        select sum(d.count::bigint * d.price) n from new_order o join new_order_detail d using (order_id) where starts_with(o.order_id, $1)`,
          [prefix],
        );
        const credited = Object.keys(paid).reduce((sum, s) => sum + paid[s]! - sellers[s]!, 0);
        tally.expectNone(
          'sellers credited exactly once for the killed batch and the rest',
          Math.abs(credited - Number(total!.n)),
          { credited, total },
        );
      }
      await expectInvariants(db.pool, tally);
      await expectConserved(db.pool, before, tally);
    },
    60_000,
  );
});

describe('orders the bookkeeping fails for', () => {
  test.each(jobs)(
    '%s with three runners skips the bad orders of many batches, records each with its error, processes every other order once, and retries them once fixed',
    async (job, state, fromState, toState) => {
      const prefix = `bad_${state}_`;
      const count = 3000;
      const ids = await bulkOrders(db.pool, { ...shop, prefix, count, due: true, state });
      // Bad orders of two kinds, spread over many batches of 100:
      //  - an app's own trigger refuses to let them change (the warehouse is counting them);
      //  - the bookkeeping itself overflows: restocking a shelf already full to the integer limit
      //    (cancel), or crediting a seller whose balance is at the bigint limit (confirm).
      const refused = [150, 500, 999, 1000, 1001, 1700, 2500, 2999].map((i) => ids[i - 1]!);
      await db.pool.query(`
      create table if not exists public.reliability_refused (order_id text primary key);
      create or replace function public.reliability_refuse() returns trigger language plpgsql as $$
      begin
        if exists (select from public.reliability_refused r where r.order_id = new.order_id) then
          raise exception 'the warehouse is counting order %', new.order_id using errcode = 'P0001';
        end if;
        return new;
      end $$;
      create or replace trigger reliability_refuse before update on public.new_order
        for each row execute function public.reliability_refuse();`);
      await db.pool.query('insert into public.reliability_refused select unnest($1::text[])', [refused]);
      const overflowing = [1, 2, 3, 4].map((i) => `${prefix}x${i}`);
      await db.pool.query(`insert into "user" values ('sellerX', 0) on conflict do nothing;
      insert into user_store values ('storeX', 'sellerX') on conflict do nothing;
      insert into store values ('storeX', 'bookX', 1000) on conflict do nothing`);
      for (const id of overflowing) {
        await db.pool.query(
          `select order_automation.place_order($1, 'buyer1', 'storeX', '[{"book_id": "bookX", "count": 3, "price": 50}]')`,
          [id],
        );
        if (state === 'shipped')
          await db.pool.query('select order_automation.pay_order($1), order_automation.ship_order($1)', [id]);
      }
      await db.pool.query(
        `update new_order set pay_deadline = now() - interval '1 hour', receipt_deadline = case when state = 2 then now() - interval '1 hour' end
      where order_id = any($1)`,
        [overflowing],
      );
      if (job === 'cancel_expired_orders')
        await db.pool.query(`update store set stock_level = 2147483647 where store_id = 'storeX'`);
      else await db.pool.query(`update "user" set balance = 9223372036854775807 where user_id = 'sellerX'`);
      tally.faultsInjected += refused.length + overflowing.length;
      const bad = [...refused, ...overflowing];
      const before = await conserved(db.pool);
      const since = (await db.pool.query<{ id: string }>('select coalesce(max(id), 0) id from order_automation.run'))
        .rows[0]!.id;

      const deadlocksBefore = await deadlocks(db.pool);
      const runErrors: string[] = [];
      await parallel(db.url, 3, tally, async (client, i) => {
        // Each runner runs until a run finds nothing it can do; a run that fails is counted, and run again.
        for (let n = -1, failures = 0; n !== 0 && failures < 10;) {
          try {
            n = Number(
              (
                await client.query<Record<string, string>>(
                  `call order_automation.${job}(batch_size => ${[100, 70, 130][i]})`,
                )
              ).rows[0]![job === 'cancel_expired_orders' ? 'cancelled' : 'confirmed'],
            );
          } catch (error) {
            failures++;
            runErrors.push(`${sqlstateOf(error)} ${(error as Error).message}`);
          }
        }
      });
      tally.ordersRaced += count + overflowing.length;

      tally.expectNone('bad orders never fail a run', runErrors.length, runErrors.slice(0, 3));
      tally.expectNone('no deadlock', (await deadlocks(db.pool)) - deadlocksBefore);
      const processed = await eventsOf(db.pool, prefix, causeOf(job));
      tally.expectNone('every good order processed, once', Math.abs(processed - count + refused.length), { processed });
      expect(await statesOf(db.pool, prefix)).toEqual({ [fromState]: bad.length, [toState]: count - refused.length });
      const { rows: left } = await db.pool.query<{ order_id: string }>(
        `select order_id from new_order where starts_with(order_id, $1) and state = $2 order by order_id`,
        [prefix, fromState],
      );
      expect(left.map((r) => r.order_id)).toEqual([...bad].sort());
      const { rows: failures } = await db.pool.query<{ order_id: string; sqlstate: string; message: string }>(
        `
      select distinct f.order_id, f.sqlstate, f.message from order_automation.order_failure f
        join order_automation.run r on r.id = f.run_id where r.id > $1 and r.job = $2`,
        [since, job],
      );
      const wrongFailures = failures.filter((f) => !bad.includes(f.order_id));
      tally.expectNone('no good order is recorded as failed', wrongFailures.length, wrongFailures.slice(0, 5));
      for (const id of refused) {
        expect(failures).toContainEqual({
          order_id: id,
          sqlstate: 'P0001',
          message: `the warehouse is counting order ${id}`,
        });
      }
      for (const id of overflowing) {
        expect(failures.filter((f) => f.order_id === id).map((f) => f.sqlstate)).toEqual(['22003']);
      }
      const {
        rows: [runs],
      } = await db.pool.query<{ errors: string; unfinished: string; failed: string; recorded: string }>(
        `
      select count(error) errors, count(*) filter (where finished_at is null) unfinished, sum(failed) failed,
             (select count(*) from order_automation.order_failure f join order_automation.run r on r.id = f.run_id
               where r.id > $1 and r.job = $2) recorded
        from order_automation.run where id > $1 and job = $2`,
        [since, job],
      );
      expect(runs).toMatchObject({ errors: '0', unfinished: '0' });
      // A bad order fails again in every run that tries it (how many do depends on the race): each
      // run's count of failures is the failures it recorded, and those are of the bad orders only.
      expect(runs!.failed).toBe(runs!.recorded);
      expect(new Set(failures.map((f) => f.order_id))).toEqual(new Set(bad));
      await expectInvariants(db.pool, tally);
      await expectConserved(db.pool, before, tally);

      // Fixed (the count is over, the shelf and the balance made room): the next run does exactly them.
      await db.pool.query('delete from public.reliability_refused');
      if (job === 'cancel_expired_orders')
        await db.pool.query(`update store set stock_level = 1000 where store_id = 'storeX'`);
      else await db.pool.query(`update "user" set balance = 0 where user_id = 'sellerX'`);
      const fixed = await conserved(db.pool);
      const retried =
        job === 'cancel_expired_orders'
          ? (await cancelExpiredOrders(db.pool)).cancelled
          : (await confirmShippedOrders(db.pool)).confirmed;
      expect(retried).toBe(bad.length);
      expect(await statesOf(db.pool, prefix)).toEqual({ [toState]: count + overflowing.length });
      await expectInvariants(db.pool, tally);
      await expectConserved(db.pool, fixed, tally);
    },
    60_000,
  );
});

describe('locks nobody releases', () => {
  test('an order locked by another session forever is skipped, not waited for, and processed once the lock is gone', async () => {
    const prefix = 'locked_';
    await bulkOrders(db.pool, { ...shop, prefix, count: 50, due: true });
    const holder = newClient({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query(`select from new_order where order_id = $1 for update`, [`${prefix}7`]);
      tally.faultsInjected++;
      const timeout = await packageLockTimeoutMs(db.pool);
      const started = Date.now();
      await cancelExpiredOrders(db.pool, { batchSize: 10 });
      // Under the lock_timeout, with the lock still held: the locked row was skipped, never waited for.
      expect(Date.now() - started).toBeLessThan(timeout!);
      expect(await statesOf(db.pool, prefix)).toEqual({ 0: 1, 4: 49 });
    } finally {
      await holder.query('rollback');
      await holder.end();
    }
    await cancelExpiredOrders(db.pool);
    expect(await statesOf(db.pool, prefix)).toEqual({ 4: 50 });
  });

  // Each in a database of its own (a lock on a table would stop the others), all at once.
  test.concurrent.each<[string, Job, string]>([
    [
      'a shelf (store row) the cancelled orders go back to',
      'cancel_expired_orders',
      `select from store where store_id = 'store1' for update`,
    ],
    [
      'the balance row of the seller to be credited',
      'confirm_shipped_orders',
      `select from "user" where user_id = 'seller1' for update`,
    ],
    [
      'the order table (an app migration left open)',
      'cancel_expired_orders',
      'lock table public.new_order in access exclusive mode',
    ],
    ['the settings table', 'cancel_expired_orders', 'lock table order_automation.settings in access exclusive mode'],
    ['the run log table', 'confirm_shipped_orders', 'lock table order_automation.run in share mode'],
  ])(
    'a lock held forever on %s never hangs the %s run: it gives up within its lock_timeout and says why',
    async (_what, job, lock) => {
      const own = await reliabilityDatabase();
      const holder = newClient({ connectionString: own.url });
      const runner = newClient({ connectionString: own.url });
      try {
        await seedBookstore(own.pool, { ...shop, balance: 1_000_000, stock: 1000 });
        await bulkOrders(own.pool, {
          ...shop,
          prefix: 'stuck_',
          count: 60,
          due: true,
          state: job === 'cancel_expired_orders' ? 'unpaid' : 'shipped',
        });
        const ms = await packageLockTimeoutMs(own.pool);
        expect(ms, 'the package sets a lock_timeout of its own').toBeGreaterThan(0);
        await holder.connect();
        await runner.connect();
        await holder.query('begin');
        await holder.query(lock);
        tally.faultsInjected++;
        const pid = (await runner.query<{ pid: number }>('select pg_backend_pid() pid')).rows[0]!.pid;
        const started = Date.now();
        // A session like pg_cron's: no timeout of its own. The bound is the package's lock_timeout.
        const call = runner.query(`call order_automation.${job}()`).then(
          () => undefined,
          (error: unknown) => error,
        );
        const bound = ms! + 5000;
        const outcome = await Promise.race([call, sleep(bound).then(() => 'hung' as const)]);
        if (outcome === 'hung') await own.pool.query('select pg_cancel_backend($1)', [pid]);
        tally.expectNone(
          `the run gives up within lock_timeout (${ms} ms) + 5 s instead of waiting forever`,
          outcome === 'hung' ? 1 : 0,
        );
        expect(Date.now() - started).toBeGreaterThanOrEqual(ms! * 0.9);
        expect(sqlstateOf(outcome)).toBe('55P03');
        await holder.query('rollback');
        // The run log says what happened: no run left "running", and the one that gave up says why.
        const { rows: runs } = await own.pool.query<{ finished_at: Date | null; error: string | null }>(
          'select finished_at, error from order_automation.run where job = $1',
          [job],
        );
        expect(runs.filter((r) => r.finished_at === null)).toEqual([]);
        for (const run of runs) expect(run.error).toMatch(/lock timeout.*55P03/);
        // Nothing half-applied, and the next run does the work.
        await expectInvariants(own.pool, tally);
        await runner.query(`call order_automation.${job}()`);
        expect(await statesOf(own.pool, 'stuck_')).toEqual({ [job === 'cancel_expired_orders' ? 4 : 3]: 60 });
      } finally {
        await holder.end().catch(() => undefined);
        await runner.end().catch(() => undefined);
        await own.drop();
      }
    },
    60_000,
  );
});

describe('the server stopped mid-run', () => {
  test('after pg_ctl stop -m immediate mid-run and a restart the data is consistent, the killed run is visible, and pg_cron still runs both jobs on its schedule', async () => {
    const outcome = await crash;
    const { afterRestart, tick } = outcome;
    console.log(
      `crash: the run was killed by the server stopping (${outcome.callError}); pg_cron ran both jobs ${Math.round(tick.waitedMs / 1000)} s after the restart`,
    );
    expect(outcome.callError).not.toBe('the run finished');
    // Three batches of 500 committed before the crash, the fourth (booked, not committed) is gone.
    expect(afterRestart.states).toEqual({
      0: 5000 - outcome.committedBeforeCrash,
      2: 500,
      4: outcome.committedBeforeCrash,
    });
    expect(afterRestart.run).toEqual({ processed: String(outcome.committedBeforeCrash), finished_at: null });
    tally.expectNone(
      'consistent after the crash',
      Object.values(afterRestart.breaches).reduce((a, b) => a + b, 0),
      afterRestart.breaches,
    );
    tally.expectNone('money and stock conserved across the crash', afterRestart.conserved ? 0 : 1);
    expect(afterRestart.jobs.map((j) => j.jobname)).toEqual(afterRestart.installedJobs);
    expect(afterRestart.jobs.every((j) => j.active)).toBe(true);
    // pg_cron's next tick after the restart did the rest.
    expect(tick.due).toBe(0);
    expect(tick.runs.every((r) => r.error === null)).toBe(true);
    const automation = afterRestart.installedJobs.filter((name) =>
      /(cancel_expired|confirm_shipped)_orders@/.test(name),
    );
    expect(automation).toHaveLength(2);
    // Either job's run may be the database's waiter, running until just past the next tick.
    expect(
      [
        ...new Set(
          tick.cronRuns.filter((r) => r.status === 'succeeded' || r.status === 'running').map((r) => r.jobname),
        ),
      ]
        .filter((name) => automation.includes(name))
        .sort(),
    ).toEqual(automation);
    expect(tick.cronRuns.filter((r) => automation.includes(r.jobname) && r.status === 'failed')).toEqual([]);
    tally.expectNone(
      'consistent after pg_cron finished the work',
      Object.values(tick.breaches).reduce((a, b) => a + b, 0),
      tick.breaches,
    );
    tally.expectNone('money and stock conserved through the next tick', tick.conserved ? 0 : 1);
    tally.ordersRaced += 5500;
  }, 150_000);
});
