// The idle tick: what a run of each procedure costs when nothing is due, timed inside the server,
// on the big database and on a small one, alternately, so that both meet the same load.
//
// The clock is read with clock_timestamp() in a DO block around the CALL, so the figure is the
// server's own time (the procedure's commits included, the network and parsing of the call not).
// The run log (order_automation.run.started_at/finished_at) would miss the procedure's first
// statements and its last commit. A DO block outside a transaction may CALL a procedure that commits.
import pg from 'pg';
import type { Job } from './drain.js';
import { median } from './stats.js';

export interface Tick {
  job: Job;
  /** Median over `calls` calls on one connection, after its first: plans and caches are warm. */
  warmMs: number;
  /** Median over `calls` calls, each the first of a new connection, as pg_cron makes one per run. */
  coldMs: number;
  calls: number;
}

/** A database and a time at which nothing is due in it. */
export interface IdleDatabase {
  url: string;
  asOf: Date;
}

const CALLS: Record<Job, string> = {
  cancel: 'order_automation.cancel_expired_orders(as_of => %s, cancelled => processed)',
  confirm: 'order_automation.confirm_shipped_orders(as_of => %s, confirmed => processed)',
};

/** Times one idle run of `job` on `client`; returns server milliseconds. */
async function timeCall(client: pg.ClientBase, job: Job, asOf: Date): Promise<number> {
  let reported: number | undefined;
  const onNotice = (notice: { message?: string | undefined }) => {
    if (notice.message?.startsWith('bench_tick_ms ')) reported = Number(notice.message.slice('bench_tick_ms '.length));
  };
  client.on('notice', onNotice);
  try {
    await client.query(`
      do $$
      declare
        started timestamptz := clock_timestamp();
        processed bigint;
      begin
        call ${CALLS[job].replace('%s', `${client.escapeLiteral(asOf.toISOString())}::timestamptz`)};
        raise notice 'bench_tick_ms %', extract(epoch from clock_timestamp() - started) * 1000;
        if processed <> 0 then
          raise exception 'the idle tick processed % orders: something was due', processed;
        end if;
      end $$`);
  } finally {
    client.removeListener('notice', onNotice);
  }
  if (reported === undefined) throw new Error('the idle tick did not report its time');
  return reported;
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

/** Warm: `calls` calls on one connection per database, after a first; alternating between the databases. */
async function warmTicks(databases: IdleDatabase[], job: Job, calls: number): Promise<number[][]> {
  const clients = await Promise.all(databases.map((d) => connect(d.url)));
  try {
    const samples = databases.map((): number[] => []);
    for (let i = 0; i <= calls; i++) {
      for (const [d, database] of databases.entries()) {
        const ms = await timeCall(clients[d]!, job, database.asOf);
        if (i > 0) samples[d]!.push(ms);
      }
    }
    return samples;
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
}

/** Cold: `calls` calls per database, each on a new connection; alternating between the databases. */
async function coldTicks(databases: IdleDatabase[], job: Job, calls: number): Promise<number[][]> {
  const samples = databases.map((): number[] => []);
  for (let i = 0; i < calls; i++) {
    for (const [d, database] of databases.entries()) {
      const client = await connect(database.url);
      try {
        samples[d]!.push(await timeCall(client, job, database.asOf));
      } finally {
        await client.end();
      }
    }
  }
  return samples;
}

/** Measures both procedures' idle ticks on each database; returns their ticks in the same order. */
export async function idleTicks(databases: IdleDatabase[], calls: number): Promise<Tick[][]> {
  const ticks = databases.map((): Tick[] => []);
  for (const job of ['cancel', 'confirm'] as const) {
    const warm = await warmTicks(databases, job, calls);
    const cold = await coldTicks(databases, job, calls);
    for (const d of databases.keys())
      ticks[d]!.push({ job, warmMs: median(warm[d]!), coldMs: median(cold[d]!), calls });
  }
  return ticks;
}
