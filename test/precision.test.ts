// Deadline precision: the run pg_cron starts waits for deadlines, one waiter per database serves
// both jobs, and waiting holds no snapshot. The runs here are started as pg_cron starts them (a
// connection named pg_cron, CALL without arguments); the real schedule is in pg-cron.e2e.test.ts.
import pg from 'pg';
import { afterAll, describe, expect, test } from 'vitest';
import { getSettings, getStatus, InvalidSettingError, updateSettings } from '../src/index.js';
import { createTestDatabase, seedBookstore, type TestDatabase } from './helpers.js';
import {
  cronLike,
  latenessOf,
  msToNextMinute,
  percentile,
  placeDueAt,
  scheduledCall,
  scheduledConnections,
  sleep,
  until,
} from './precision-support.js';

const created: TestDatabase[] = [];
afterAll(async () => {
  await Promise.all(created.map((db) => db.drop()));
});

async function shop(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  created.push(db);
  await seedBookstore(db.pool, { balance: 1_000_000_000, stock: 100_000 });
  return db;
}

const inSeconds = (s: number) => new Date(Date.now() + s * 1000);

/** Runs of a job in the run log, oldest first. */
async function runsOf(db: pg.Pool, job: string) {
  const { rows } = await db.query<{ processed: string; failed: string; finished: boolean; error: string | null }>(
    `select processed, failed, finished_at is not null as finished, error from order_automation.run where job = $1 order by id`,
    [job],
  );
  return rows.map((r) => ({ ...r, processed: Number(r.processed), failed: Number(r.failed) }));
}

/** A test that needs one waiting run to last a few seconds starts it where the minute has room. */
async function roomBeforeTick(ms: number): Promise<void> {
  if (msToNextMinute() < ms) await sleep(msToNextMinute() + 2_500);
}

/**
 * When the coming tick is: a run that returns before it did not wait (a waiting run stays until just
 * past the tick). Judged by the clock, not by a duration, so that a busy machine does not fail it.
 */
const nextTickAt = () => Date.now() + msToNextMinute();

/** What the backend of pid is doing. */
async function activity(db: pg.Pool, pid: number) {
  const { rows } = await db.query<{ wait_event: string | null; state: string }>(
    'select wait_event, state from pg_stat_activity where pid = $1',
    [pid],
  );
  return rows[0];
}

describe.concurrent('the run pg_cron starts waits for deadlines', () => {
  test('each unpaid and each shipped order is processed within the precision of its deadline, by one waiting connection for both jobs', async () => {
    const db = await shop();
    const at = Array.from({ length: 30 }, (_, i) => inSeconds(1.5 + i * 0.2));
    await placeDueAt(db.pool, 'p', { unpaid: at.filter((_, i) => i % 2 === 0), shipped: at.filter((_, i) => i % 2) });
    const cron = cronLike(db.url, db.pool, ['cancel_expired_orders', 'confirm_shipped_orders']);
    try {
      await sleep(1_000);
      const connections: number[] = [];
      await until(
        'every order to be processed',
        async () => {
          connections.push(await scheduledConnections(db.pool));
          return (await latenessOf(db.pool, 'p')).pending === 0;
        },
        20_000,
      );
      // One connection waits for both jobs (a tick may show a second one for an instant).
      expect(percentile(connections, 50)).toBe(1);
      const { ms } = await latenessOf(db.pool, 'p');
      expect(ms).toHaveLength(30);
      expect(percentile(ms, 99)).toBeLessThanOrEqual(1_000);
      expect(Math.max(...ms)).toBeLessThanOrEqual(2_000);
      // None early: an order is processed at its deadline, not before.
      expect(Math.min(...ms)).toBeGreaterThanOrEqual(0);

      const status = await getStatus(db.pool);
      for (const job of ['cancel_expired_orders', 'confirm_shipped_orders']) {
        const worst = status.jobs.find((j) => j.job === job)!.worstLatenessMs;
        expect(worst).not.toBeNull();
        expect(worst!).toBeGreaterThanOrEqual(0);
        expect(worst!).toBeLessThanOrEqual(Math.max(...ms) + 1);
      }
    } finally {
      await cron.stop();
    }
    expect(cron.errors).toEqual([]);
    // Runs recorded, finished, and the orders counted once each, under the job that processed them.
    for (const job of ['cancel_expired_orders', 'confirm_shipped_orders']) {
      const runs = await runsOf(db.pool, job);
      expect(runs.every((r) => r.finished && r.error === null)).toBe(true);
      expect(runs.reduce((n, r) => n + r.processed, 0)).toBe(15);
    }
  });

  test('waiting holds no snapshot: a row deleted while the automation waits is removable by VACUUM at once', async () => {
    const db = await shop();
    // A long precision: the waiter only sleeps, in slices, for the whole test.
    await updateSettings(db.pool, { precision: '30 seconds' });
    await db.pool.query('create table public.vacuum_probe (id integer); insert into public.vacuum_probe values (1)');
    await roomBeforeTick(10_000);
    const waiter = await scheduledCall(db.url, 'cancel_expired_orders');
    await until('the run to wait', async () => (await activity(db.pool, waiter.pid))?.wait_event === 'PgSleep', 5_000);
    await db.pool.query('delete from public.vacuum_probe');
    // A slice of the wait holds a snapshot for half a second at most; a busy machine (autovacuum
    // analysing this new database, say) may hold one a little longer: VACUUM is tried again for
    // a few seconds, while the run waits on (a wait in one pg_sleep would hold it 30 s).
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    let notices: string[] = [];
    client.on('notice', (n) => notices.push(n.message ?? ''));
    let tuples: string[] | undefined;
    const tried = Date.now();
    do {
      await sleep(500);
      notices = [];
      await client.query('vacuum (verbose) public.vacuum_probe');
      tuples = notices
        .join('\n')
        .match(/tuples: (\d+) removed, (\d+) remain, (\d+) are dead but not yet removable/)
        ?.slice(1);
    } while (tuples?.[0] !== '1' && Date.now() - tried < 4_000);
    const holders = await db.pool.query(
      'select pid, backend_type, backend_xmin, state, wait_event from pg_stat_activity where datname = current_database()',
    );
    await client.end();
    expect(tuples, JSON.stringify({ notices, holders: holders.rows })).toEqual(['1', '0', '0']);
    expect((await activity(db.pool, waiter.pid))?.wait_event).toBe('PgSleep');

    // A cancel request while it waits ends the run: recorded in its run rows, then re-raised.
    await db.pool.query('select pg_cancel_backend($1)', [waiter.pid]);
    const result = await waiter.done;
    expect('error' in result && result.error.code).toBe('57014');
    for (const job of ['cancel_expired_orders', 'confirm_shipped_orders']) {
      expect(await runsOf(db.pool, job)).toEqual([
        { processed: 0, failed: 0, finished: true, error: null }, // the tick's run
        { processed: 0, failed: 0, finished: true, error: expect.stringMatching(/SQLSTATE 57014/) },
      ]);
    }
  });

  test("while a waiter serves both jobs, the other job's run returns at once, and the waiter does its orders", async () => {
    const db = await shop();
    await roomBeforeTick(10_000);
    const waiter = await scheduledCall(db.url, 'cancel_expired_orders');
    await until('the run to wait', async () => (await activity(db.pool, waiter.pid))?.wait_event === 'PgSleep', 5_000);
    const tickAt = nextTickAt();
    const other = await (await scheduledCall(db.url, 'confirm_shipped_orders')).done;
    expect(other).toEqual({ processed: 0 });
    expect(Date.now(), 'the other run returned before the tick').toBeLessThan(tickAt);
    await placeDueAt(db.pool, 'c', { shipped: [inSeconds(0.5)] });
    await until('the shipped order to be confirmed', async () => (await latenessOf(db.pool, 'c')).pending === 0, 5_000);
    await db.pool.query(`update order_automation.job set active = false`);
    expect(await waiter.done).toEqual({ processed: 0 });
    // The tick's run, then the waiting's, opened when it had an order to process.
    expect(await runsOf(db.pool, 'confirm_shipped_orders')).toEqual([
      { processed: 0, failed: 0, finished: true, error: null },
      { processed: 1, failed: 0, finished: true, error: null },
    ]);
  });

  test("a run whose tick is covered returns at once; the next tick's run waits for the waiter's lock, then takes over", async () => {
    const db = await shop();
    await roomBeforeTick(10_000);
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      const { tick } = (await holder.query<{ tick: number }>('select tick from order_automation.waiter_plan()'))
        .rows[0]!;
      await holder.query('select pg_advisory_lock(424201, $1)', [tick]);
      expect(await (await scheduledCall(db.url, 'cancel_expired_orders')).done).toEqual({ processed: 0 });
      expect(await runsOf(db.pool, 'cancel_expired_orders')).toEqual([]);
      await holder.query('select pg_advisory_unlock(424201, $1), pg_advisory_lock(424201, 0)', [tick]);

      // As if the previous tick's waiter still ran: this run waits, without starting a run yet.
      const next = await scheduledCall(db.url, 'cancel_expired_orders');
      await sleep(800);
      expect(await runsOf(db.pool, 'cancel_expired_orders')).toEqual([]);
      await holder.query('select pg_advisory_unlock(424201, 0)');
      await until(
        'the run to take over',
        async () => (await runsOf(db.pool, 'cancel_expired_orders')).length === 1,
        2_000,
      );
      await db.pool.query(`update order_automation.job set active = false`);
      expect(await next.done).toEqual({ processed: 0 });
    } finally {
      await holder.end();
    }
  });

  test("another role squatting the waiter's advisory locks costs precision, never the automation: the run makes one pass", async () => {
    const db = await shop();
    await roomBeforeTick(10_000);
    // Any role that may connect may take advisory locks: this one holds the current tick's lock, the
    // next ones and the waiter's own, as if it wanted every run pg_cron starts to return at once.
    const squatter = `squatter_${Math.random().toString(36).slice(2, 10)}`;
    await db.pool.query(`create role ${squatter} login`);
    const url = new URL(db.url);
    url.username = squatter;
    const holder = new pg.Client({ connectionString: url.toString() });
    await holder.connect();
    try {
      const { tick } = (
        await holder.query<{ tick: number }>(
          'select floor(extract(epoch from clock_timestamp()) / 60)::int + 1 as tick',
        )
      ).rows[0]!;
      await holder.query('select pg_advisory_lock(424201, t) from generate_series($1::int, $1::int + 3) t', [tick]);
      await placeDueAt(db.pool, 's', { unpaid: [inSeconds(-1), inSeconds(-2)], shipped: [inSeconds(-1)] });
      const tickAt = nextTickAt();
      expect(await (await scheduledCall(db.url, 'cancel_expired_orders')).done).toEqual({ processed: 2 });
      expect(await (await scheduledCall(db.url, 'confirm_shipped_orders')).done).toEqual({ processed: 1 });
      expect(Date.now(), 'both runs returned before the tick').toBeLessThan(tickAt);

      // The waiter's own lock squatted, the tick's free: the run does not wait for the squatter.
      await holder.query('select pg_advisory_unlock_all()');
      await holder.query('select pg_advisory_lock(424201, 0)');
      await placeDueAt(db.pool, 't', { unpaid: [inSeconds(-1)] });
      expect(await (await scheduledCall(db.url, 'cancel_expired_orders')).done).toEqual({ processed: 1 });
      expect(Date.now(), 'the run returned before the tick').toBeLessThan(tickAt);
      expect((await latenessOf(db.pool, 's')).pending + (await latenessOf(db.pool, 't')).pending).toBe(0);
    } finally {
      await holder.end();
      await db.pool.query(`drop role ${squatter}`);
    }
  });

  test("with precision '1 minute', and for a run given as_of, pg_cron's run is one pass", async () => {
    const db = await shop();
    await placeDueAt(db.pool, 'o', { unpaid: [inSeconds(-1)], shipped: [inSeconds(-1)] });
    await roomBeforeTick(10_000);
    const tickAt = nextTickAt();
    expect(await (await scheduledCall(db.url, 'confirm_shipped_orders', 'as_of => now()')).done).toEqual({
      processed: 1,
    });
    await updateSettings(db.pool, { precision: '1 minute' });
    expect(await (await scheduledCall(db.url, 'cancel_expired_orders')).done).toEqual({ processed: 1 });
    expect(Date.now(), 'both runs returned before the tick').toBeLessThan(tickAt);
    expect((await runsOf(db.pool, 'cancel_expired_orders')).length).toBe(1);
  });

  test('a statement_timeout ends the waiting run before it would cancel it', async () => {
    const db = await shop();
    await roomBeforeTick(10_000);
    // Cancelled by the timeout, the CALL would fail and its run record SQLSTATE 57014.
    const waiter = await scheduledCall(db.url, 'cancel_expired_orders', '', `set statement_timeout = '4s'`);
    expect(await waiter.done).toEqual({ processed: 0 });
    expect((await runsOf(db.pool, 'cancel_expired_orders')).map((r) => r.error)).toEqual([null]);
  });

  test('a bad order is skipped and recorded once per run, not once per pass, while the others are processed', async () => {
    const db = await shop();
    await updateSettings(db.pool, { precision: '200 milliseconds' });
    await db.pool.query(`
      create function public.refuse_bad() returns trigger language plpgsql as $$
      begin
        raise exception 'order % is refused by the app', new.order_id;
      end $$;
      create trigger refuse_bad before update on public.new_order
        for each row when (new.order_id = 'bu0' and new.state = 4) execute function public.refuse_bad()`);
    await placeDueAt(db.pool, 'b', { unpaid: [inSeconds(-1), inSeconds(1), inSeconds(2)] });
    await roomBeforeTick(10_000);
    const waiter = await scheduledCall(db.url, 'cancel_expired_orders');
    await until('the good orders to be cancelled', async () => (await latenessOf(db.pool, 'b')).pending === 1, 5_000);
    await sleep(1_000); // five more passes
    await db.pool.query(`update order_automation.job set active = false`);
    expect(await waiter.done).toEqual({ processed: 2 });
    const failures = await db.pool.query('select order_id from order_automation.order_failure');
    expect(failures.rows).toEqual([{ order_id: 'bu0' }]);
    // However many passes, the bad order failed once: in the tick's run, or in the waiting's run
    // when the tick's run came late (a busy machine) and found the good ones due too.
    const runs = await runsOf(db.pool, 'cancel_expired_orders');
    expect(runs.every((r) => r.finished && r.error === null)).toBe(true);
    expect(runs.reduce((n, r) => n + r.failed, 0)).toBe(1);
    expect(runs.reduce((n, r) => n + r.processed, 0)).toBe(2);
  });

  test('purging at once (purge_cancelled_after 0) follows the cancellations of a waiting run', async () => {
    const db = await shop();
    await updateSettings(db.pool, { purgeCancelledAfter: '0 seconds' });
    await placeDueAt(db.pool, 'g', { unpaid: [inSeconds(1)] });
    await roomBeforeTick(10_000);
    const waiter = await scheduledCall(db.url, 'cancel_expired_orders');
    await until(
      'the cancelled order to be deleted',
      async () => (await db.pool.query(`select from new_order where order_id = 'gu0'`)).rowCount === 0,
      5_000,
    );
    await db.pool.query(`update order_automation.job set active = false`);
    expect(await waiter.done).toEqual({ processed: 1 });
    const history = await db.pool.query(
      `select cause from order_automation.order_event where order_id = 'gu0' and cause in ('payment_timeout', 'purge_cancelled_orders') order by id`,
    );
    expect(history.rows.map((r) => r.cause)).toEqual(['payment_timeout', 'purge_cancelled_orders']);
  });

  test("the waiting run resolves no operator through the caller's search_path, even one that puts public before pg_catalog", async () => {
    const db = await shop();
    await updateSettings(db.pool, { precision: '200 milliseconds' });
    // Operators the run's own arithmetic and comparisons would resolve to, were they not qualified.
    const traps: [string, string, string, string][] = [
      ['>=', 'timestamptz', 'timestamptz', 'boolean'],
      ['-', 'timestamptz', 'timestamptz', 'interval'],
      ['+', 'timestamptz', 'interval', 'timestamptz'],
      ['<>', 'text[]', 'text[]', 'boolean'],
      ['||', 'text[]', 'text[]', 'text[]'],
      ['=', 'boolean', 'boolean', 'boolean'],
      ['=', 'bigint', 'bigint', 'boolean'],
      ['=', 'integer', 'integer', 'boolean'],
      ['<', 'integer', 'integer', 'boolean'],
      ['>', 'integer', 'integer', 'boolean'],
      ['>', 'bigint', 'integer', 'boolean'],
      ['>=', 'bigint', 'integer', 'boolean'],
      ['+', 'bigint', 'bigint', 'bigint'],
      ['+', 'bigint', 'integer', 'bigint'],
    ];
    await db.pool.query('create table public.hijack_log (what text not null)');
    for (const [i, [op, left, right, returns]] of traps.entries()) {
      await db.pool.query(`
        create function public.trap_${i}(${left}, ${right}) returns ${returns} language sql set search_path = pg_catalog
          as $$ insert into public.hijack_log values ('${op}(${left}, ${right})'); select $1 operator(pg_catalog.${op}) $2 $$;
        create operator public.${op} (leftarg = ${left}, rightarg = ${right}, function = public.trap_${i})`);
    }
    await placeDueAt(db.pool, 'h', { unpaid: [inSeconds(0.5)], shipped: [inSeconds(1)] });
    await roomBeforeTick(10_000);
    const waiter = await scheduledCall(db.url, 'cancel_expired_orders', '', 'set search_path = public, pg_catalog');
    await until('both orders to be processed', async () => (await latenessOf(db.pool, 'h')).pending === 0, 5_000);
    await sleep(500);
    await db.pool.query(`update order_automation.job set active = false`);
    expect(await waiter.done).toEqual({ processed: 1 });
    expect((await db.pool.query('select what from public.hijack_log')).rows).toEqual([]);
  });

  test('however many passes it makes, a waiting run reads orders through their indexes only, never a whole table', async () => {
    const db = await shop();
    await updateSettings(db.pool, { precision: '100 milliseconds' });
    // A shop's table: orders in every state, their deadlines in no particular order on disk; none due.
    // (A plan kept generic would scan it whole to find no order due, if a probe allowed that plan.)
    await db.pool.query(`
      set session_replication_role = replica;
      insert into public.new_order (order_id, user_id, store_id, state, pay_deadline, receipt_deadline)
      select 'n' || i, 'buyer1', 'store1', (array[0, 1, 2, 3, 3, 3, 4])[1 + i % 7],
             now() + interval '1 day' + random() * interval '30 days', now() + interval '1 day' + random() * interval '30 days'
        from generate_series(1, 50000) i;
      reset session_replication_role;
      analyze public.new_order`);
    const seqScans = async () =>
      Number(
        (await db.pool.query(`select seq_scan from pg_stat_user_tables where relid = 'public.new_order'::regclass`))
          .rows[0].seq_scan,
      );
    const before = await seqScans();
    await roomBeforeTick(10_000);
    const waiter = await scheduledCall(db.url, 'cancel_expired_orders');
    await sleep(3_000); // thirty passes: long past the five after which plans are kept generic
    await db.pool.query(`update order_automation.job set active = false`);
    expect(await waiter.done).toEqual({ processed: 0 });
    await until('the run to report its statistics', async () => (await scheduledConnections(db.pool)) === 0, 5_000);
    await sleep(1_500);
    expect(await seqScans()).toBe(before);
  });

  test('precision defaults to a second, and a value outside 10 milliseconds – 1 minute is refused, naming the setting', async () => {
    const db = await shop();
    expect((await getSettings(db.pool)).precision).toBe('1 second');
    for (const value of ['0', '9 milliseconds', '-1 second', '61 seconds', '1 hour']) {
      const error = await updateSettings(db.pool, { precision: value }).catch((e: unknown) => e);
      expect(error, String(value)).toBeInstanceOf(InvalidSettingError);
      expect((error as Error).message).toContain('precision must be between 10 milliseconds and 1 minute');
    }
    expect((await updateSettings(db.pool, { precision: '250 milliseconds' })).precision).toBe('0.25 seconds');
    expect((await updateSettings(db.pool, { precision: '1 minute' })).precision).toBe('1 minute');
  });
});
