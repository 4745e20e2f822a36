// Choosing the default batch size from measurement: the same drains at each batch size asked for,
// after putting the orders the automation processed back as they were.
import type pg from 'pg';
import { buyersDuringDrain } from './buyers.js';
import { asLoader } from './connections.js';
import { vacuumOrders, type Dataset } from './data.js';
import { drain, type Job } from './drain.js';

export interface BatchSize {
  batchSize: number;
  cancel: { ordersPerSecond: number; ms: number };
  confirm: { ordersPerSecond: number; ms: number };
  /** Buyer p99 during a cancel drain at this batch size. */
  buyerP99Ms: number;
}

// Undoes the automation's work exactly (state, timestamp, stock or balances, events), triggers off.
const UNDO: Record<Job, string> = {
  cancel: `
    with undone as (
      update public.new_order o set state = 0, cancelled_at = null
        from (select distinct e.order_id from order_automation.order_event e where e.cause = 'payment_timeout') e
       where o.order_id = e.order_id and o.state = 4
      returning o.order_id, o.store_id),
    retaken as (
      update public.store s set stock_level = s.stock_level - held.count
        from (select undone.store_id, d.book_id, sum(d.count)::integer as count
                from undone join public.new_order_detail d using (order_id)
               group by undone.store_id, d.book_id) held
       where s.store_id = held.store_id and s.book_id = held.book_id)
    delete from order_automation.order_event e where e.cause = 'payment_timeout'`,
  confirm: `
    with undone as (
      update public.new_order o set state = 2, received_at = null
        from (select distinct e.order_id from order_automation.order_event e where e.cause = 'receipt_timeout') e
       where o.order_id = e.order_id and o.state = 3
      returning o.order_id, o.store_id),
    repaid as (
      update public."user" u set balance = u.balance - earned.total
        from (select us.user_id, sum(d.count::bigint * d.price) as total
                from undone
                join public.new_order_detail d using (order_id)
                join public.user_store us using (store_id)
               group by us.user_id) earned
       where u.user_id = earned.user_id)
    delete from order_automation.order_event e where e.cause = 'receipt_timeout'`,
};

/** Puts every order the job processed back as due, and vacuums as autovacuum would after a drain. */
async function undo(pool: pg.Pool, job: Job): Promise<void> {
  await asLoader(pool, (client) => client.query(UNDO[job]));
  await vacuumOrders(pool);
}

/** For each batch size: a cancel drain and a confirm drain alone, then a cancel drain under buyers. */
export async function sweepBatchSizes(
  url: string,
  pool: pg.Pool,
  dataset: Dataset,
  sizes: number[],
  log: (line: string) => void,
): Promise<BatchSize[]> {
  const results: BatchSize[] = [];
  for (const batchSize of sizes) {
    log(`batch_size ${batchSize}: drain cancel, drain confirm, drain cancel under buyers`);
    await undo(pool, 'cancel');
    const cancel = await drain(pool, 'cancel', dataset.drainAsOf, batchSize);
    await undo(pool, 'confirm');
    const confirm = await drain(pool, 'confirm', dataset.drainAsOf, batchSize);
    await vacuumOrders(pool);
    const buyers = await buyersDuringDrain(url, pool, dataset.loadAsOf, batchSize);
    results.push({
      batchSize,
      cancel: { ordersPerSecond: cancel.ordersPerSecond, ms: cancel.ms },
      confirm: { ordersPerSecond: confirm.ordersPerSecond, ms: confirm.ms },
      buyerP99Ms: buyers.p99Ms,
    });
  }
  return results;
}
