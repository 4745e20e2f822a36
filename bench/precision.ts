// Deadline precision on the real pg_cron schedule: how late orders are processed when little is due
// and under a backlog of 100,000 orders falling due at once, and what waiting for deadlines costs
// while nothing is due (the waiting backend's CPU, the connections per database).
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { migrate } from '../src/index.js';
import { asLoader } from './connections.js';
import { generate } from './data.js';
import { median, percentile } from './stats.js';

export interface LatenessFigures {
  orders: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface IdleCost {
  seconds: number;
  /** CPU time of the backends pg_cron ran the jobs on, per second of wall time; null when /proc is not this server's. */
  cpuMsPerSecond: number | null;
  /** Connections of the database running a job, sampled twice a second. */
  connectionsMedian: number;
  connectionsMax: number;
}

export interface Precision {
  pgCron: string;
  precision: string;
  /** Orders due at spread-out instants, nothing else due. */
  idle: LatenessFigures;
  /** Unpaid orders all due at the same instant. */
  wave: LatenessFigures;
  /** Orders due at spread-out instants while the wave is processed. */
  duringWave: LatenessFigures;
  idleCost: IdleCost;
}

const IDLE_COST_SECONDS = 60;
const SPREAD_ORDERS = 120;
const SPREAD_SECONDS = 90;

function figures(ms: number[]): LatenessFigures {
  return { orders: ms.length, p50Ms: median(ms), p99Ms: percentile(ms, 99), maxMs: Math.max(...ms) };
}

/** Lateness as the contract defines it (cancelled_at - pay_deadline, received_at - receipt_deadline), once all are processed. */
async function latenessWhenDone(pool: pg.Pool, where: string, timeoutMs: number): Promise<LatenessFigures> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await pool.query<{ pending: string; ms: number[] | null }>(`
      select count(*) filter (where state in (0, 2)) as pending,
             array_agg((extract(epoch from case state when 4 then cancelled_at - pay_deadline
                                                       when 3 then received_at - receipt_deadline end) * 1000)::float8)
               filter (where state in (3, 4)) as ms
        from public.new_order where ${where}`);
    const { pending, ms } = rows[0]!;
    if (Number(pending) === 0) return figures(ms ?? []);
    if (Date.now() > deadline)
      throw new Error(`${pending} orders (${where}) still not processed after ${timeoutMs} ms`);
    await sleep(1_000);
  }
}

/** Places unpaid and shipped orders of a bench buyer, alternately, due every `seconds / n` from `from`. */
async function placeSpread(pool: pg.Pool, prefix: string, n: number, from: Date, seconds: number): Promise<void> {
  await pool.query(
    `
    with placed as (
      select i, order_automation.place_order($1 || i, 'bench-buyer1', 'store1', '[{"book_id":"book1","count":1,"price":100}]')
        from generate_series(1, $2::integer) i)
    select order_automation.pay_order($1 || i), order_automation.ship_order($1 || i) from placed where i % 2 = 0`,
    [prefix, n],
  );
  await pool.query(
    `
    update public.new_order o
       set pay_deadline = case when o.state = 0 then d.at else o.pay_deadline end,
           receipt_deadline = case when o.state = 2 then d.at else o.receipt_deadline end
      from (select $1 || i as id, $3::timestamptz + (i - 1) * ($4::float8 / $2) * interval '1 second' as at
              from generate_series(1, $2::integer) i) d
     where o.order_id = d.id`,
    [prefix, n, from, seconds],
  );
}

/** CPU time (ns) a process has run, from the scheduler's own accounting; null when it is not ours to read. */
function cpuNs(pid: number): number | null {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return null;
  }
}

async function jobConnections(pool: pg.Pool): Promise<number[]> {
  const { rows } = await pool.query<{ pid: number }>(`
    select pid from pg_stat_activity
     where datname = current_database() and application_name = 'pg_cron' and query ilike 'call order_automation.%'`);
  return rows.map((r) => r.pid);
}

/** Samples the job connections twice a second for `seconds`, adding up the CPU of each backend seen. */
async function idleCost(pool: pg.Pool, seconds: number): Promise<IdleCost> {
  const counts: number[] = [];
  const cpu = new Map<number, { first: number; last: number }>();
  let readable = true;
  const started = performance.now();
  while (performance.now() - started < seconds * 1000) {
    const pids = await jobConnections(pool);
    counts.push(pids.length);
    for (const pid of pids) {
      const ns = cpuNs(pid);
      if (ns === null) readable = false;
      else cpu.set(pid, { first: cpu.get(pid)?.first ?? ns, last: ns });
    }
    await sleep(500);
  }
  const wallS = (performance.now() - started) / 1000;
  const ns = [...cpu.values()].reduce((sum, c) => sum + c.last - c.first, 0);
  return {
    seconds: wallS,
    cpuMsPerSecond: readable && cpu.size > 0 ? ns / 1e6 / wallS : null,
    connectionsMedian: median(counts),
    connectionsMax: Math.max(...counts),
  };
}

/**
 * On a database of its own with `orders` orders: schedules the jobs in pg_cron (default settings),
 * waits for the first tick, then measures. `serverUrl`: a superuser's connection to the server.
 */
export async function precision(
  url: string,
  serverUrl: string,
  orders: number,
  log: (line: string) => void,
): Promise<Precision> {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  // pg_cron's own database: its version and its jobs are read there.
  const cronDatabase = (await pool.query(`select current_setting('cron.database_name') as name`)).rows[0]
    .name as string;
  const cronUrl = new URL(serverUrl);
  cronUrl.pathname = `/${cronDatabase}`;
  const admin = new pg.Client({ connectionString: cronUrl.toString() });
  await admin.connect();
  try {
    log(`precision: generating ${orders.toLocaleString('en-US')} orders`);
    await generate(pool, orders);
    // Nothing due until the measurements make it so: every open deadline a month out.
    await asLoader(pool, async (client) => {
      await client.query(`update public.new_order set pay_deadline = now() + interval '30 days' where state = 0`);
      await client.query(`update public.new_order set receipt_deadline = now() + interval '30 days' where state = 2`);
      await client.query('vacuum analyze public.new_order');
    });
    await migrate(url); // schedules the jobs in pg_cron (in its own database when that is another)
    const pgCron = (await admin.query(`select extversion from pg_extension where extname = 'pg_cron'`)).rows[0]
      .extversion as string;
    const setting = (await pool.query(`select precision::text from order_automation.settings`)).rows[0]
      .precision as string;
    log(`precision: jobs scheduled in pg_cron ${pgCron}; waiting for the first tick`);
    const firstTick = Date.now() + 75_000;
    while ((await jobConnections(pool)).length === 0) {
      if (Date.now() > firstTick) throw new Error('pg_cron started no run of the jobs within 75 s');
      await sleep(500);
    }
    await sleep(2_000);

    log(`precision: idle cost over ${IDLE_COST_SECONDS} s`);
    const cost = await idleCost(pool, IDLE_COST_SECONDS);

    log(`precision: ${SPREAD_ORDERS} orders due over ${SPREAD_SECONDS} s`);
    await placeSpread(pool, 'idle-', SPREAD_ORDERS, new Date(Date.now() + 3_000), SPREAD_SECONDS);
    const idle = await latenessWhenDone(pool, `starts_with(order_id, 'idle-')`, (SPREAD_SECONDS + 60) * 1000);

    // Every tenth order of the dataset is unpaid (its category 0): all of them due at one instant.
    const waveAt = new Date(Date.now() + 10_000);
    const wave = `state in (0, 4) and starts_with(order_id, 'o') and right(order_id, 1) = '0'`;
    await asLoader(pool, (client) =>
      client.query(`update public.new_order set pay_deadline = $1 where state = 0 and ${wave}`, [waveAt]),
    );
    const waveOrders = Number(
      (await pool.query(`select count(*) from public.new_order where state = 0 and ${wave}`)).rows[0].count,
    );
    log(`precision: ${waveOrders.toLocaleString('en-US')} orders due at once, and ${SPREAD_ORDERS / 2} more after`);
    await placeSpread(pool, 'wave-', SPREAD_ORDERS / 2, waveAt, SPREAD_SECONDS / 3);
    const duringWave = await latenessWhenDone(pool, `starts_with(order_id, 'wave-')`, 300_000);
    const waveFigures = await latenessWhenDone(pool, `${wave} and pay_deadline = '${waveAt.toISOString()}'`, 300_000);
    return { pgCron, precision: setting, idle, wave: waveFigures, duringWave, idleCost: cost };
  } finally {
    // The jobs go with the database; pg_cron must not run them against a dropped one.
    await admin
      .query('select cron.unschedule(jobid) from cron.job where database = $1', [new URL(url).pathname.slice(1)])
      .catch(() => undefined);
    await admin.end();
    await pool.end();
  }
}
