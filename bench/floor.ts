// The floor: the least work any correct implementation must do to process the due orders, as one
// set-based statement with no triggers, in a transaction rolled back afterwards. Measured over all
// due orders at once (the issue's definition), and in batches like the procedures' own.
import type pg from 'pg';
import type { Job } from './drain.js';
import { flushStatistics } from './memory.js';

export interface Floor {
  job: Job;
  orders: number;
  ms: number;
  ordersPerSecond: number;
  /** null: one statement for every due order. */
  batchSize: number | null;
}

// $1: as_of; $2: the orders of one batch, or null for every due order. The predicate of the due
// indexes (orders marked failed left out) is repeated, so that the floor reads them as the jobs do.
const DUE: Record<Job, string> = {
  cancel:
    'o.state = 0 and (o.failed_state is null or o.failed_state <> 0) and o.pay_deadline <= $1 and ($2::text[] is null or o.order_id = any ($2))',
  confirm:
    'o.state = 2 and (o.failed_state is null or o.failed_state <> 2) and o.receipt_deadline <= $1 and ($2::text[] is null or o.order_id = any ($2))',
};

const STATEMENTS: Record<Job, string> = {
  // Flip the state, put the books back (one update per store and book), one event per order.
  cancel: `
    with due as (
      update public.new_order o set state = 4, cancelled_at = now()
       where ${DUE.cancel}
      returning o.order_id, o.store_id),
    restock as (
      update public.store s set stock_level = s.stock_level + back.count
        from (select due.store_id, d.book_id, sum(d.count)::integer as count
                from due join public.new_order_detail d using (order_id)
               group by due.store_id, d.book_id) back
       where s.store_id = back.store_id and s.book_id = back.book_id),
    events as (
      insert into order_automation.order_event (order_id, from_state, to_state, cause)
      select due.order_id, 0, 4, 'payment_timeout' from due)
    select count(*)::integer as orders from due`,
  // Flip the state, pay each seller once, one event per order.
  confirm: `
    with due as (
      update public.new_order o set state = 3, received_at = now()
       where ${DUE.confirm}
      returning o.order_id, o.store_id),
    credit as (
      update public."user" u set balance = u.balance + earned.total
        from (select us.user_id, sum(d.count::bigint * d.price) as total
                from due
                join public.new_order_detail d using (order_id)
                join public.user_store us using (store_id)
               group by us.user_id) earned
       where u.user_id = earned.user_id),
    events as (
      insert into order_automation.order_event (order_id, from_state, to_state, cause)
      select due.order_id, 2, 3, 'receipt_timeout' from due)
    select count(*)::integer as orders from due`,
};

/** Runs the floor statement for `ids` (null: every due order) in a transaction it rolls back; returns [orders, ms]. */
async function once(client: pg.ClientBase, job: Job, asOf: Date, ids: string[] | null): Promise<[number, number]> {
  await client.query('begin');
  try {
    await client.query('set local session_replication_role = replica');
    const started = performance.now();
    const { rows } = await client.query<{ orders: number }>(STATEMENTS[job], [asOf, ids]);
    return [rows[0]!.orders, performance.now() - started];
  } finally {
    await client.query('rollback');
  }
}

/**
 * Times the floor of `job` at `asOf`: in one statement, or in batches of `batchSize` (each rolled
 * back, so the next finds its own orders still due). It changes nothing but leaves dead rows to vacuum.
 */
export async function floor(pool: pg.Pool, job: Job, asOf: Date, batchSize: number | null = null): Promise<Floor> {
  const client = await pool.connect();
  try {
    let orders = 0;
    let ms = 0;
    for (const ids of batchSize === null ? [null] : await dueInBatches(client, job, asOf, batchSize)) {
      const [n, t] = await once(client, job, asOf, ids);
      orders += n;
      ms += t;
    }
    return { job, orders, ms, ordersPerSecond: (orders / ms) * 1000, batchSize };
  } finally {
    // Its hash joins may spill to temp files: those must not count in the drains measured next.
    await flushStatistics(client).catch(() => undefined);
    client.release();
  }
}

/** The due orders, oldest deadline first as the procedures take them, cut into batches. */
async function dueInBatches(client: pg.ClientBase, job: Job, asOf: Date, batchSize: number): Promise<string[][]> {
  const deadline = job === 'cancel' ? 'pay_deadline' : 'receipt_deadline';
  const { rows } = await client.query<{ order_id: string }>(
    `select o.order_id from public.new_order o where ${DUE[job]} order by o.${deadline}`,
    [asOf, null],
  );
  const batches: string[][] = [];
  for (let i = 0; i < rows.length; i += batchSize) batches.push(rows.slice(i, i + batchSize).map((r) => r.order_id));
  return batches;
}
