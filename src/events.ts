// The order history: order_automation.order_event, read by id.
import { type Db, query } from './db.js';
import { type OrderState, stateName } from './types.js';

export interface OrderEvent {
  id: number;
  orderId: string;
  /** null: the order was placed. */
  from: OrderState | null;
  /** null: the order was deleted. */
  to: OrderState | null;
  /** payment_timeout / receipt_timeout for the automation; the package function's name or 'sql' otherwise. */
  cause: string;
  at: Date;
}

export interface ReadEventsOptions {
  /** Only events with a larger id (to page through, or to resume). */
  afterId?: number;
  orderId?: string;
  /** Default 1000. */
  limit?: number;
}

/** Events in id order: the history of one order, or of all orders after a given id. */
export async function readOrderEvents(db: Db, options: ReadEventsOptions = {}): Promise<OrderEvent[]> {
  const rows = await query<{ id: string; order_id: string; from_state: number | null; to_state: number | null; cause: string; at: Date }>(db, `
    select id, order_id, from_state, to_state, cause, at from order_automation.order_event
     where id > $1::bigint and ($2::text is null or order_id = $2::text)
     order by id limit $3::integer`,
    [options.afterId ?? 0, options.orderId ?? null, options.limit ?? 1000]);
  return rows.map((r) => ({ id: Number(r.id), orderId: r.order_id, from: stateName(r.from_state), to: stateName(r.to_state), cause: r.cause, at: r.at }));
}
