// Connections: every entry point accepts a pg Pool, Client (or PoolClient) or a connection string,
// so a call can join the caller's connection (and transaction) or stand on its own.
import pg from 'pg';
import { toOrderAutomationError } from './errors.js';

export type Db = string | pg.Pool | pg.ClientBase;

/** Runs `work` on one connection taken from `db`, released (or closed) afterwards. */
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
    if (db instanceof pg.Pool) {
      const client = await db.connect();
      try {
        return await work(client);
      } finally {
        client.release();
      }
    }
    return await work(db);
  } catch (error) {
    throw toOrderAutomationError(error);
  }
}

/** Runs `work` on a connection of its own to another database of `db`'s server (pg_cron's, say). */
export async function withDatabase<T>(db: Db, database: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(sameServer(db, database));
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** One query on `db`, errors mapped to the package's typed errors. */
export async function query<R extends pg.QueryResultRow>(db: Db, text: string, values: unknown[] = []): Promise<R[]> {
  return withClient(db, async (client) => (await client.query<R>(text, values)).rows);
}

/** Connection settings for `db`'s server: its own database, or another one (pg_cron's, say). */
export function sameServer(db: Db, database?: string): pg.ClientConfig {
  // pg lets a connection string override separate fields: change the database inside the string.
  const withDatabase = (connectionString: string) => {
    if (database === undefined) return connectionString;
    const url = new URL(connectionString);
    url.pathname = `/${encodeURIComponent(database)}`;
    return url.toString();
  };
  if (typeof db === 'string') return { connectionString: withDatabase(db), connectionTimeoutMillis: 10_000 };
  if (db instanceof pg.Pool) {
    const { connectionString, ...options } = db.options;
    if (connectionString) return { ...options, connectionString: withDatabase(connectionString) };
    return database === undefined ? options : { ...options, database };
  }
  // pg's Client keeps the settings it connected with; they are not in its type declarations.
  const params = (db as unknown as { connectionParameters?: pg.ClientConfig }).connectionParameters ?? {};
  const { user, password, host, port, ssl } = params;
  return { user, password, host, port, ssl, database: database ?? params.database };
}
