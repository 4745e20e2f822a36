// Where the bench runs: a throwaway local PostgreSQL 15 with pg_cron (fsync off), or a server the
// user named; in both, databases of the bench's own, cloned from one migrated template.
import pg from 'pg';
import { getDatabase } from '../scripts/database/index.js';
import { migrate } from '../src/index.js';

export interface BenchServer {
  /** A superuser's connection string to the server (its cron database, for a local one). */
  url: string;
  /** Creates a database migrated with the package (no pg_cron jobs) and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Drops the bench's databases and stops what it started; idempotent. */
  stop(): Promise<void>;
}

const TEMPLATE = `order_automation_bench_${process.pid}_template`;

export async function startServer(databaseUrl: string | undefined, log: (line: string) => void): Promise<BenchServer> {
  const server = databaseUrl
    ? { url: databaseUrl, stop: async () => {} }
    : await getDatabase({ provider: 'local', log: (line) => log(`[database] ${line}`) });
  const created: string[] = [];
  const admin = (sql: string) => withAdmin(server.url, (client) => client.query(sql));
  let templateReady: Promise<void> | undefined;

  async function createTemplate(): Promise<void> {
    await admin(`create database ${TEMPLATE}`);
    created.push(TEMPLATE);
    // Without the schedule: the bench calls the procedures itself, and pg_cron must not join in.
    await migrate(databaseUrlOf(server.url, TEMPLATE), { schedule: false });
  }

  let stopping: Promise<void> | undefined;
  return {
    url: server.url,
    async createDatabase(name) {
      await (templateReady ??= createTemplate());
      await admin(`create database ${name} template ${TEMPLATE}`);
      created.push(name);
      return databaseUrlOf(server.url, name);
    },
    stop: () =>
      (stopping ??= (async () => {
        // A local cluster goes as a whole; on the user's server, only what we created.
        if (databaseUrl) {
          for (const name of created.reverse()) await admin(`drop database if exists ${name} with (force)`);
        }
        await server.stop();
      })()),
  };
}

async function withAdmin<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** The same server, another database. */
function databaseUrlOf(serverUrl: string, database: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  return url.toString();
}
