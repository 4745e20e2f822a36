// The order history: order_automation.order_event, read by id.
import pg from 'pg';
import { type Db, query, sameServer } from './db.js';
import { toOrderAutomationError } from './errors.js';
import { type OrderState, orderStates } from './types.js';

/** What the database lets into the history (order ids are bounded by new_order's: 255 characters). */
export const eventLimits = { note: 1000, cause: 63 } as const;
/** A page of history holds at most this much text (its last row may pass it), whatever its row count. */
export const pageBytes = 1024 * 1024;

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
  /**
   * What else the event says: a hold's reason, the new deadline of a reminder or an extension.
   * At most 1000 characters; a longer one (written before the limit existed) is read cut, ending in '…'.
   */
  note: string | null;
}

export interface ReadEventsOptions {
  /** Only events with a larger id (to page through, or to resume). */
  afterId?: number;
  orderId?: string;
  /** At most this many events (default 1000); a page also stops at about 1 MiB of text. */
  limit?: number;
}

interface EventRow {
  id: string;
  order_id: string;
  from_state: number | null;
  from_name: OrderState | null;
  to_name: OrderState | null;
  to_state: number | null;
  cause: string;
  at: Date;
  note: string | null;
  xid: string;
}

/** A text past its limit (only rows written before the limit existed), cut with a mark that it was. */
const cut = (text: string, limit: number) => (text.length > limit ? `${text.slice(0, limit)}…` : text);

function toEvent(r: Omit<EventRow, 'xid'>): OrderEvent {
  return {
    id: Number(r.id),
    orderId: r.order_id,
    from: r.from_name,
    to: r.to_name,
    fromState: r.from_state,
    toState: r.to_state,
    cause: cut(r.cause, eventLimits.cause),
    at: r.at,
    note: r.note === null ? null : cut(r.note, eventLimits.note),
  };
}

/**
 * One page of events, bounded by rows (limit) and by size: rows are taken in `order` while the text
 * before them is under pageBytes, so a page is at most pageBytes plus its last row. Texts are read
 * no longer than their limit (plus one character, to tell they were longer): substr() of a stored
 * value fetches only that slice, and octet_length() reads its size without fetching it, so a row
 * written before the limits (a hundred million characters) costs neither the server nor the reader
 * its size. `candidates`: the rows the row limit alone would give, to tell a page cut by size.
 */
/** The state's name for the codes in settings now (an adopted app may use -1 for cancelled). */
function stateNameSql(code: string): string {
  // Schema-qualified operator: the caller's search_path may hold another role's "=".
  return `case ${orderStates.map((state) => `when ${code} operator(pg_catalog.=) s.state_${state} then '${state}'`).join(' ')} end`;
}

function pageQuery(where: string, order: string, limit: string): string {
  return `
    select q.* from (
      select p.*, sum(p.bytes) over (order by ${order}) - p.bytes as before, count(*) over () as candidates
        from (select e.id, e.order_id, e.from_state, e.to_state, e.at, e.xid,
                     ${stateNameSql('e.from_state')} as from_name, ${stateNameSql('e.to_state')} as to_name,
                     substr(e.cause, 1, ${eventLimits.cause + 1}) as cause,
                     substr(e.note, 1, ${eventLimits.note + 1}) as note,
                     octet_length(e.order_id) + least(octet_length(e.cause), ${4 * (eventLimits.cause + 1)})
                       + coalesce(least(octet_length(e.note), ${4 * (eventLimits.note + 1)}), 0) as bytes
                from order_automation.order_event e cross join order_automation.settings s
               where ${where}
               order by ${order}
               limit ${limit}) p
    ) q
    where q.before < ${pageBytes}
    order by ${order}`;
}

interface PageRow extends EventRow {
  candidates: string;
}

/**
 * Events in id order: the history of one order, or of all orders after a given id. One page: at most
 * `limit` events and about 1 MiB of text, so fewer than `limit` does not mean the end; read on with
 * afterId = the last id until a page comes back empty.
 */
export async function readOrderEvents(db: Db, options: ReadEventsOptions = {}): Promise<OrderEvent[]> {
  const rows = await query<PageRow>(
    db,
    pageQuery('e.id > $1::bigint and ($2::text is null or e.order_id = $2::text)', 'id', '$3::integer'),
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
  /**
   * Reads at most once this often however often it is woken (default 50 ms): any role may NOTIFY the
   * channel, and a flood of them costs the watcher at most 20 reads a second.
   */
  minReadIntervalMs?: number;
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
 * resumes where it was, so no event is lost or repeated. Pages are bounded by rows and by size (see
 * readOrderEvents); a NOTIFY only wakes it, so what another role sends on the channel changes nothing
 * it yields.
 */
export async function* watchEvents(db: Db, options: WatchOptions = {}): AsyncGenerator<OrderEvent> {
  const {
    signal,
    pollIntervalMs = 5000,
    reconnectDelayMs = 1000,
    retryForMs = 60_000,
    minReadIntervalMs = 50,
  } = options;
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
      // Woken during a read, the watcher reads again rather than sleep: that NOTIFY may be for a
      // transaction the read's snapshot did not see yet.
      let woken = false;
      client.on('notification', () => {
        woken = true;
        wake?.();
      });
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
      let lastRead = 0;
      let full = false;
      while (!signal?.aborted) {
        // However often a NOTIFY wakes it, at most one read per minReadIntervalMs (a full page is
        // read on at once: that is catching up, not being woken).
        const wait = lastRead + minReadIntervalMs - Date.now();
        if (!full && wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        if (signal?.aborted) return;
        lastRead = Date.now();
        woken = false;
        const { rows }: pg.QueryResult<PageRow> = await client.query<PageRow>(
          pageQuery(
            `(e.xid, e.id) > ($1::xid8, $2::bigint) and e.id > $3::bigint
                 and e.xid < pg_snapshot_xmin(pg_current_snapshot())`,
            'xid, id',
            '1000',
          ),
          [position.xid, position.id, afterId],
        );
        full = rows.length === 1000 || (rows.length > 0 && rows.length < Number(rows[0]!.candidates));
        for (const r of rows) {
          position = { xid: r.xid, id: r.id };
          yield toEvent(r);
          if (signal?.aborted) return;
        }
        if (!full && !woken) await sleep(pollIntervalMs);
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
