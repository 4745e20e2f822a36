// The two automations, run on demand (pg_cron runs the same procedures on its schedule).
// The procedures commit after each batch: run them on a connection outside any transaction.
import { type Db, query } from './db.js';

export interface RunOptions {
  /** Process what is due at this time (default: now). */
  asOf?: Date;
  /** Orders per batch and commit (default: the batch_size setting). */
  batchSize?: number;
}

/** Cancels every unpaid order past its payment deadline; returns how many. */
export async function cancelExpiredOrders(db: Db, options: RunOptions = {}): Promise<{ cancelled: number }> {
  const rows = await query<{ cancelled: string }>(db,
    'call order_automation.cancel_expired_orders(as_of => $1::timestamptz, batch_size => $2::integer)',
    [options.asOf ?? null, options.batchSize ?? null]);
  return { cancelled: Number(rows[0]!.cancelled) };
}

/** Marks received every shipped order past its receipt deadline; returns how many. */
export async function confirmShippedOrders(db: Db, options: RunOptions = {}): Promise<{ confirmed: number }> {
  const rows = await query<{ confirmed: string }>(db,
    'call order_automation.confirm_shipped_orders(as_of => $1::timestamptz, batch_size => $2::integer)',
    [options.asOf ?? null, options.batchSize ?? null]);
  return { confirmed: Number(rows[0]!.confirmed) };
}
