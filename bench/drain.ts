// Draining a backlog with the package's procedures, exactly as pg_cron or a user calls them.
import type pg from 'pg';
import { measureMemory, type MemoryUse } from './memory.js';

export type Job = 'cancel' | 'confirm';

export interface Drain extends MemoryUse {
  job: Job;
  orders: number;
  ms: number;
  ordersPerSecond: number;
  /** CALLs that found orders: more than one when a call reached max_run_time. */
  calls: number;
  /** The batch size passed, or null for the setting's. */
  batchSize: number | null;
}

const CALLS: Record<Job, string> = {
  cancel: 'call order_automation.cancel_expired_orders(as_of => $1::timestamptz, batch_size => $2::integer)',
  confirm: 'call order_automation.confirm_shipped_orders(as_of => $1::timestamptz, batch_size => $2::integer)',
};

/**
 * Calls the job's procedure until it finds nothing due at `asOf` (each call stops at max_run_time),
 * and times it from the client: the procedures commit after each batch, so that is the time a
 * backlog takes.
 */
export async function drain(pool: pg.Pool, job: Job, asOf: Date, batchSize: number | null = null): Promise<Drain> {
  const client = await pool.connect();
  try {
    return await measureMemory(pool, client, async () => {
      const started = performance.now();
      let orders = 0;
      let calls = 0;
      for (;;) {
        const { rows } = await client.query<Record<'cancelled' | 'confirmed', string>>(CALLS[job], [asOf, batchSize]);
        const processed = Number(rows[0]![job === 'cancel' ? 'cancelled' : 'confirmed']);
        if (processed === 0) break;
        orders += processed;
        calls++;
      }
      const ms = performance.now() - started;
      return { job, orders, ms, ordersPerSecond: (orders / ms) * 1000, calls, batchSize };
    });
  } finally {
    client.release();
  }
}
