// Connections: every entry point accepts a pg Pool, Client (or PoolClient) or a connection string,
// so a call can join the caller's connection (and transaction) or stand on its own.
//
// The public types below are structural and name nothing of `pg`: any pg 8.x object fits them, with
// or without @types/pg in the caller's project, and a Pool is told from a Client by its shape (a
// pool counts its clients), never by `instanceof`, which fails whenever the caller's `pg` is
// another copy than the one this module resolves.
import pg from 'pg';
import { toOrderAutomationError } from './errors.js';

/** What the module uses of a pg Client or PoolClient (any pg 8.x). */
export interface DbClient {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
}

/** What the module uses of a pg Pool (any pg 8.x): it lends clients, and counts them. */
export interface DbPool {
  connect(): Promise<DbClient & { release(): void }>;
  readonly totalCount: number;
  readonly idleCount: number;
}

/** A pg Pool, a pg Client (or a client of a pool: the call joins its transaction), or a connection string. */
export type Db = string | DbPool | DbClient;

/** @internal A pool, by shape: pg-pool's Pool counts its clients; a Client has no such counters. */
export function isPool(db: Db): db is DbPool {
  const candidate = db as Partial<DbPool>;
  return (
    typeof db === 'object' &&
    db !== null &&
    typeof candidate.connect === 'function' &&
    typeof candidate.totalCount === 'number' &&
    typeof candidate.idleCount === 'number'
  );
}

/** @internal Runs `work` on one connection taken from `db`, released (or closed) afterwards. */
export async function withClient<T>(db: Db, work: (client: pg.ClientBase) => Promise<T>): Promise<T> {
  try {
    if (typeof db === 'string') {
      // A host that drops packets must not hang a CLI or a test: give up after 10 s.
      const client = new pg.Client({ connectionString: db, connectionTimeoutMillis: 10_000 });
      await client.connect();
      try {
        return await work(client);
      } finally {
        await client.end().catch(() => undefined);
      }
    }
    if (isPool(db)) {
      const client = await db.connect();
      try {
        return await work(client as unknown as pg.ClientBase);
      } finally {
        client.release();
      }
    }
    return await work(db as unknown as pg.ClientBase);
  } catch (error) {
    throw toOrderAutomationError(error);
  }
}

/** @internal Runs `work` on a connection of its own to another database of `db`'s server (pg_cron's, say). */
export async function withDatabase<T>(db: Db, database: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(sameServer(db, database));
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** @internal One query on `db`, errors mapped to the package's typed errors. */
export async function query<R extends pg.QueryResultRow>(db: Db, text: string, values: unknown[] = []): Promise<R[]> {
  return withClient(db, async (client) => (await client.query<R>(text, values)).rows);
}

/** @internal Connection settings for `db`'s server: its own database, or another one (pg_cron's, say). */
export function sameServer(db: Db, database?: string): pg.ClientConfig {
  // pg lets a connection string override separate fields: change the database inside the string.
  const withDatabase = (connectionString: string) => {
    if (database === undefined) return connectionString;
    const url = new URL(connectionString);
    url.pathname = `/${encodeURIComponent(database)}`;
    return url.toString();
  };
  if (typeof db === 'string') return { connectionString: withDatabase(db), connectionTimeoutMillis: 10_000 };
  if (isPool(db)) {
    // pg-pool keeps the settings its clients connect with in `options` (every pg 8.x).
    const { connectionString, ...options } = (db as { options?: pg.ClientConfig }).options ?? {};
    if (connectionString) return { ...options, connectionString: withDatabase(connectionString) };
    return database === undefined ? options : { ...options, database };
  }
  // pg's Client keeps the settings it connected with; they are not in its type declarations.
  const params = (db as unknown as { connectionParameters?: pg.ClientConfig }).connectionParameters ?? {};
  const { user, password, host, port, ssl } = params;
  return { user, password, host, port, ssl, database: database ?? params.database };
}
