// The order history: order_automation.order_event, read by id.
import pg from 'pg';
import { type Db, query, sameServer } from './db.js';
import { toOrderAutomationError } from './errors.js';
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
  cause: string;
  at: Date;
  note: string | null;
  xid: string;
}

function toEvent(r: Omit<EventRow, 'xid'>): OrderEvent {
  return {
    id: Number(r.id),
    orderId: r.order_id,
    from: stateName(r.from_state),
    to: stateName(r.to_state),
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
    select id, order_id, from_state, to_state, cause, at, note from order_automation.order_event
     where id > $1::bigint and ($2::text is null or order_id = $2::text)
     order by id limit $3::integer`,
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
  /**
   * How long the watcher keeps trying to reconnect after the server went away (refused or timed-out
   * connections, default 60000 ms) before it gives up with the last error. Errors that will not go
   * away (a refused login, no such database, the package not installed, no right to read the
   * history, SSL refused, an unknown host) end it at once, and so does a server that never answered.
   */
  retryForMs?: number;
}

/** Errors no reconnect can cure: the watcher stops with them (typed) rather than retry in silence. */
const permanentCodes = new Set([
  '28P01', // password authentication failed
  '28000', // no such role, or pg_hba refused it
  '3D000', // no such database
  '42P01', // order_automation.order_event does not exist: the package is not installed
  '3F000', // schema order_automation does not exist
  '42501', // no right to read the history
  '42883', // a function the watcher calls does not exist (a server too old)
  'ENOTFOUND',
]);

function codeOf(error: unknown): string | undefined {
  for (
    let e = error as { code?: unknown; cause?: unknown; errors?: unknown[] } | undefined, depth = 0;
    e && depth < 5;
    depth++
  ) {
    if (typeof e.code === 'string') return e.code;
    e = (Array.isArray(e.errors) && e.errors.length > 0 ? e.errors[0] : e.cause) as typeof e;
  }
  return undefined;
}

function isPermanent(error: unknown): boolean {
  const code = codeOf(error);
  if (code !== undefined && permanentCodes.has(code)) return true;
  return error instanceof Error && /^The server does not support SSL connections$/.test(error.message);
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
  const { signal, pollIntervalMs = 5000, reconnectDelayMs = 1000, retryForMs = 60_000 } = options;
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

  // Whether the watcher ever connected, and since when it has been failing to (undefined: it is not).
  let everConnected = false;
  let failingSince: number | undefined;
  while (!signal?.aborted) {
    const client = new pg.Client(config);
    try {
      client.on('error', () => undefined); // surfaces as a failed query below
      await client.connect();
      everConnected = true;
      failingSince = undefined;
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
          select e.id, e.order_id, e.from_state, e.to_state, e.cause, e.at, e.note, e.xid::text
            from order_automation.order_event e
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
      // Give up, typed, on what will not go away: the watcher never hangs in silence.
      failingSince ??= Date.now();
      if (isPermanent(error) || !everConnected || Date.now() - failingSince > retryForMs) {
        throw toOrderAutomationError(error);
      }
      options.onReconnect?.(error);
      await sleep(reconnectDelayMs);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}
