// The order history: order_automation.order_event, read by id.
import pg from 'pg';
import { type Db, query, sameServer } from './db.js';
import { type OrderState, orderStates } from './types.js';

export interface OrderEvent {
  id: number;
  orderId: string;
  /** null: the order was placed. */
  from: OrderState | null;
  /** null: the order was deleted. */
  to: OrderState | null;
  /** The codes as new_order.state held them (settings state_unpaid ... name them; an app's own code has no name). */
  fromState: number | null;
  toState: number | null;
  /** payment_timeout / receipt_timeout for the automation; the package function's name or 'sql' otherwise. */
  cause: string;
  at: Date;
  /** What else the event says: a hold's reason, the new deadline of a reminder or an extension. */
  note: string | null;
}

export interface ReadEventsOptions {
  /** Only events with a larger id (to page through, or to resume). */
  afterId?: number;
  orderId?: string;
  /** Default 1000. */
  limit?: number;
}

interface EventRow {
  id: string;
  order_id: string;
  from_state: number | null;
  to_state: number | null;
  from_name: OrderState | null;
  to_name: OrderState | null;
  cause: string;
  at: Date;
  note: string | null;
  xid: string;
}

/** The state's name for the codes in settings now (an adopted app may use -1 for cancelled). */
function stateNameSql(code: string): string {
  // Schema-qualified operator: the caller's search_path may hold another role's "=".
  return `case ${orderStates.map((state) => `when ${code} operator(pg_catalog.=) s.state_${state} then '${state}'`).join(' ')} end`;
}
const eventColumns = `e.id, e.order_id, e.from_state, e.to_state, ${stateNameSql('e.from_state')} as from_name,
  ${stateNameSql('e.to_state')} as to_name, e.cause, e.at, e.note`;

function toEvent(r: Omit<EventRow, 'xid'>): OrderEvent {
  return {
    id: Number(r.id),
    orderId: r.order_id,
    from: r.from_name,
    to: r.to_name,
    fromState: r.from_state,
    toState: r.to_state,
    cause: r.cause,
    at: r.at,
    note: r.note,
  };
}

/** Events in id order: the history of one order, or of all orders after a given id. */
export async function readOrderEvents(db: Db, options: ReadEventsOptions = {}): Promise<OrderEvent[]> {
  const rows = await query<Omit<EventRow, 'xid'>>(
    db,
    `
    select ${eventColumns} from order_automation.order_event e, order_automation.settings s
     where e.id > $1::bigint and ($2::text is null or e.order_id = $2::text)
     order by e.id limit $3::integer`,
    [options.afterId ?? 0, options.orderId ?? null, options.limit ?? 1000],
  );
  return rows.map(toEvent);
}

export interface WatchOptions {
  /** Start after this event id (default: with the events of transactions that commit from now on). */
  afterId?: number;
  /** Stops the iteration. */
  signal?: AbortSignal;
  /** A NOTIFY wakes the watcher at once; without one it looks anyway this often (default 5000 ms). */
  pollIntervalMs?: number;
  /** Wait before reconnecting after the connection is lost (default 1000 ms). */
  reconnectDelayMs?: number;
  /** Told about each lost connection before the watcher reconnects. */
  onReconnect?: (error: unknown) => void;
}

/**
 * Order events as they are written, woken by NOTIFY on channel order_automation.
 *
 * Reads by transaction: only events of transactions that have ended (xid below the snapshot's
 * xmin), in (transaction, id) order, so an event whose transaction commits after one with a larger
 * id is never skipped. The position lives here: after a lost connection the watcher reconnects and
 * resumes where it was, so no event is lost or repeated.
 */
export async function* watchEvents(db: Db, options: WatchOptions = {}): AsyncGenerator<OrderEvent> {
  const { signal, pollIntervalMs = 5000, reconnectDelayMs = 1000 } = options;
  const config = { ...sameServer(db), application_name: 'order_automation_watch' };
  const afterId = options.afterId ?? 0;
  // Position: the last (xid, id) yielded. Unset until the first read decides where to begin.
  let position: { xid: string; id: string } | undefined;
  let wake: (() => void) | undefined;
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        wake = undefined;
        resolve();
      }
      wake = done;
      signal?.addEventListener('abort', done, { once: true });
    });

  while (!signal?.aborted) {
    const client = new pg.Client(config);
    try {
      client.on('error', () => undefined); // surfaces as a failed query below
      await client.connect();
      client.on('notification', () => wake?.());
      await client.query('listen order_automation');
      if (!position) {
        const start = await client.query<{ xid: string }>(
          options.afterId === undefined
            ? 'select pg_snapshot_xmin(pg_current_snapshot())::text as xid'
            : 'select coalesce(min(xid), pg_snapshot_xmin(pg_current_snapshot()))::text as xid from order_automation.order_event where id > $1',
          options.afterId === undefined ? [] : [afterId],
        );
        // Just below the first transaction to read: xid8 '0' sorts below every real one.
        position = { xid: (BigInt(start.rows[0]!.xid) - 1n).toString(), id: String(Number.MAX_SAFE_INTEGER) };
      }
      while (!signal?.aborted) {
        const { rows }: pg.QueryResult<EventRow> = await client.query<EventRow>(
          `
          select ${eventColumns}, e.xid::text
            from order_automation.order_event e, order_automation.settings s
           where (e.xid, e.id) > ($1::xid8, $2::bigint) and e.id > $3::bigint
             and e.xid < pg_snapshot_xmin(pg_current_snapshot())
           order by e.xid, e.id
           limit 1000`,
          [position.xid, position.id, afterId],
        );
        for (const r of rows) {
          position = { xid: r.xid, id: r.id };
          yield toEvent(r);
          if (signal?.aborted) return;
        }
        if (rows.length < 1000) await sleep(pollIntervalMs);
      }
    } catch (error) {
      if (signal?.aborted) return;
      options.onReconnect?.(error);
      await sleep(reconnectDelayMs);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}
