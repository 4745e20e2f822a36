// What the three providers share: the result they return, their error, and the check that the
// server they found has pg_cron loaded.
import pg from 'pg';

export type Provider = 'url' | 'testcontainers' | 'local';

export interface Database {
  provider: Provider;
  /** A superuser's connection string for the cron database; local: postgres://postgres@127.0.0.1:PORT/postgres. */
  url: string;
  /** Value of cron.database_name on that server. */
  cronDatabase: string;
  /** Stops what we started (no-op for 'url'); idempotent. */
  stop(): Promise<void>;
}

export interface GetDatabaseOptions {
  /** Local provider: keep the cluster here, reused across runs and kept on stop. Default: a temp dir deleted on stop. */
  dataDir?: string;
  /** Progress messages. */
  log?: (line: string) => void;
  /** Use this provider, whatever ORDER_AUTOMATION_DB and DATABASE_URL say. */
  provider?: Provider;
  /** Local provider: extensions besides pg_cron to install with apt-get when missing (best effort), e.g. plpgsql_check. */
  extensions?: string[];
}

export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError';
}

/** Used in messages when no PostgreSQL is installed at all; also the container's version. */
export const DEFAULT_MAJOR = 15;

/**
 * Reads cron.database_name, which only exists when pg_cron is preloaded; with
 * createExtension, first installs pg_cron into the database of `url` (ours: the cron database).
 */
export async function readCronDatabase(
  url: string,
  { createExtension }: { createExtension: boolean },
): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  // A connection the server ends between two queries fails the next one; unheard, its 'error' event
  // would be an uncaught exception.
  client.on('error', () => undefined);
  await client.connect();
  try {
    if (createExtension) await client.query('create extension if not exists pg_cron');
    const { rows } = await client.query<{ cron_database_name: string }>(
      `select current_setting('cron.database_name', true) as cron_database_name`,
    );
    const cronDatabase = rows[0]?.cron_database_name;
    if (!cronDatabase)
      throw new Error('pg_cron is not loaded (add it to shared_preload_libraries and restart the server)');
    return cronDatabase;
  } finally {
    await client.end();
  }
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
