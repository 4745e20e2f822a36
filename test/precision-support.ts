// What the deadline-precision tests share: orders due at chosen instants, their lateness, and runs
// started the way pg_cron starts them (a connection named pg_cron, CALL without arguments).
import pg from 'pg';

export type ScheduledJob = 'cancel_expired_orders' | 'confirm_shipped_orders';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Places orders of buyer1 at store1 (one copy of book1 each) due at the given instants: unpaid ones
 * by their pay deadline, shipped ones (paid and shipped first) by their receipt deadline.
 */
export async function placeDueAt(
  db: pg.Pool,
  prefix: string,
  due: { unpaid?: Date[]; shipped?: Date[] },
): Promise<string[]> {
  const unpaid = (due.unpaid ?? []).map((at, i) => ({ id: `${prefix}u${i}`, at }));
  const shipped = (due.shipped ?? []).map((at, i) => ({ id: `${prefix}s${i}`, at }));
  const all = [...unpaid, ...shipped];
  await db.query(
    `select order_automation.place_order(id, 'buyer1', 'store1', '[{"book_id":"book1","count":1,"price":10}]')
       from unnest($1::text[]) id`,
    [all.map((o) => o.id)],
  );
  if (shipped.length > 0) {
    await db.query(
      'select order_automation.pay_order(id), order_automation.ship_order(id) from unnest($1::text[]) id',
      [shipped.map((o) => o.id)],
    );
  }
  // Deadlines set after the fact, like an app (or a store's own timeout) may: any instant at all.
  await db.query(
    `update new_order o set pay_deadline = d.at from unnest($1::text[], $2::timestamptz[]) d(id, at) where o.order_id = d.id`,
    [unpaid.map((o) => o.id), unpaid.map((o) => o.at)],
  );
  await db.query(
    `update new_order o set receipt_deadline = d.at from unnest($1::text[], $2::timestamptz[]) d(id, at) where o.order_id = d.id`,
    [shipped.map((o) => o.id), shipped.map((o) => o.at)],
  );
  return all.map((o) => o.id);
}

export interface Lateness {
  /** Milliseconds from each processed order's deadline to its cancellation or receipt. */
  ms: number[];
  /** Orders of the prefix not processed yet. */
  pending: number;
}

/** Lateness as the contract defines it: cancelled_at - pay_deadline, received_at - receipt_deadline. */
export async function latenessOf(db: pg.Pool, prefix: string): Promise<Lateness> {
  const { rows } = await db.query<{ ms: number | null }>(
    `select (extract(epoch from case state when 4 then cancelled_at - pay_deadline
                                            when 3 then received_at - receipt_deadline end) * 1000)::float8 as ms
       from new_order where starts_with(order_id, $1)`,
    [prefix],
  );
  return {
    ms: rows.filter((r) => r.ms !== null).map((r) => r.ms!),
    pending: rows.filter((r) => r.ms === null).length,
  };
}

/** The p-th percentile (0–100) by nearest rank. */
export function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1]!;
}

/** Polls `check` until it returns true, or fails naming `what`. */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs: number, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export interface ScheduledCall {
  pid: number;
  /** The CALL's result row, or its error. */
  done: Promise<{ processed: number } | { error: pg.DatabaseError }>;
  client: pg.Client;
}

/** A run started the way pg_cron starts one: its own connection, named pg_cron, `CALL …()`. */
export async function scheduledCall(url: string, job: ScheduledJob, args = '', setup = ''): Promise<ScheduledCall> {
  const client = new pg.Client({ connectionString: url, application_name: 'pg_cron' });
  client.on('error', () => undefined);
  await client.connect();
  if (setup) await client.query(setup);
  const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  const done = client
    .query<Record<string, string>>(`call order_automation.${job}(${args})`)
    .then(
      (r) => ({ processed: Number(Object.values(r.rows[0]!)[0]) }),
      (error: pg.DatabaseError) => ({ error }),
    )
    .finally(() => client.end().catch(() => undefined));
  return { pid, done, client };
}

/** Milliseconds until the next minute boundary (pg_cron's ticks). */
export const msToNextMinute = () => 60_000 - (Date.now() % 60_000);

/**
 * Runs jobs the way pg_cron 1.4 does with '* * * * *': each at once (as if a tick had just come),
 * then at every minute tick, or right after a run that overran a tick (pg_cron queues that tick).
 * stop() pauses the jobs in order_automation.job, which ends a waiting run within a pass, and
 * resumes them once the loops are done.
 */
export function cronLike(url: string, db: pg.Pool, jobs: ScheduledJob[]) {
  let stopping = false;
  const errors: pg.DatabaseError[] = [];
  let wake: () => void = () => undefined;
  const loops = jobs.map(async (job) => {
    while (!stopping) {
      const startedMinute = Math.floor(Date.now() / 60_000);
      const result = await (await scheduledCall(url, job)).done;
      if ('error' in result) errors.push(result.error);
      if (stopping) break;
      if (Math.floor(Date.now() / 60_000) > startedMinute) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, msToNextMinute() + 5);
        const previous = wake;
        wake = () => {
          clearTimeout(timer);
          resolve();
          previous();
        };
      });
    }
  });
  return {
    errors,
    async stop(): Promise<void> {
      stopping = true;
      wake();
      await db.query('update order_automation.job set active = false where job = any ($1::text[])', [jobs]);
      await Promise.all(loops);
      await db.query('update order_automation.job set active = true where job = any ($1::text[])', [jobs]);
    },
  };
}

/** Connections of this database that pg_cron (or a test acting as it) runs a job on. */
export async function scheduledConnections(db: pg.Pool): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `select count(*)::int as n from pg_stat_activity
      where datname = current_database() and application_name = 'pg_cron' and query ilike 'call order_automation.%'`,
  );
  return rows[0]!.n;
}
