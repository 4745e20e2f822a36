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
  const rows = await query<{ cancelled: string }>(
    db,
    'call order_automation.cancel_expired_orders(as_of => $1::timestamptz, batch_size => $2::integer)',
    [options.asOf ?? null, options.batchSize ?? null],
  );
  return { cancelled: Number(rows[0]!.cancelled) };
}

/** Marks received every shipped order past its receipt deadline; returns how many. */
export async function confirmShippedOrders(db: Db, options: RunOptions = {}): Promise<{ confirmed: number }> {
  const rows = await query<{ confirmed: string }>(
    db,
    'call order_automation.confirm_shipped_orders(as_of => $1::timestamptz, batch_size => $2::integer)',
    [options.asOf ?? null, options.batchSize ?? null],
  );
  return { confirmed: Number(rows[0]!.confirmed) };
}

/** Deletes cancelled orders older than the purge_cancelled_after setting (none when it is NULL); returns how many. */
export async function purgeCancelledOrders(db: Db, options: RunOptions = {}): Promise<{ purged: number }> {
  const rows = await query<{ purged: string }>(
    db,
    'call order_automation.purge_cancelled_orders(as_of => $1::timestamptz, batch_size => $2::integer)',
    [options.asOf ?? null, options.batchSize ?? null],
  );
  return { purged: Number(rows[0]!.purged) };
}

/** Deletes the run log (and pg_cron's run details of the jobs) older than history_retention; returns how many rows. */
export async function purgeHistory(db: Db): Promise<{ purged: number }> {
  const rows = await query<{ purged: string }>(db, 'call order_automation.purge_history()');
  return { purged: Number(rows[0]!.purged) };
}
