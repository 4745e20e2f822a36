// A PostgreSQL server of the test's own, to crash: a throwaway local cluster from
// scripts/database/local.ts, stopped with `pg_ctl -m immediate` (a power cut, as far as PostgreSQL can
// tell) and started again on the same data directory, port and socket.
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { getDatabase } from '../../scripts/database/index.js';
import { newClient } from '../setup/connections.js';

export interface OwnServer {
  /** A superuser's URL of the cron database (postgres) of the cluster. */
  url: string;
  /** pg_ctl stop -m immediate: no checkpoint, no goodbye to clients; crash recovery on the next start. */
  crash(): Promise<void>;
  /** pg_ctl start on the same data directory (its runtime settings keep the port and socket). */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function ownServer(): Promise<OwnServer> {
  const database = await getDatabase({ provider: 'local' });
  try {
    const client = newClient({ connectionString: database.url });
    await client.connect();
    const { rows } = await client.query<{ data: string; bindir: string }>(
      `select current_setting('data_directory') as data, (select setting from pg_config where name = 'BINDIR') as bindir`,
    );
    await client.end();
    const dataDir = rows[0]!.data;
    const pgCtl = path.join(rows[0]!.bindir, 'pg_ctl');
    // The cluster runs as the owner of its data directory (an unprivileged user when we are root).
    const owner = statSync(dataDir);
    const asOwner = process.getuid?.() === 0 ? { uid: owner.uid, gid: owner.gid } : {};
    const pgCtlRun = (args: string[]) =>
      new Promise<void>((resolve, reject) => {
        const child = spawn(pgCtl, args, { ...asOwner, cwd: path.dirname(dataDir), stdio: ['ignore', 'pipe', 'pipe'] });
        let output = '';
        child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
        child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
        child.on('error', reject);
        child.on('close', (code) =>
          code === 0 ? resolve() : reject(new Error(`pg_ctl ${args.join(' ')} exited ${code}: ${output.trim()}`)),
        );
      });
    return {
      url: database.url,
      crash: () => pgCtlRun(['stop', '-D', dataDir, '-m', 'immediate', '-w']),
      // The log file scripts/database/local.ts gives the cluster: beside the data directory.
      start: () =>
        pgCtlRun(['start', '-D', dataDir, '-l', path.join(path.dirname(dataDir), 'postgres.log'), '-w', '-t', '60']),
      stop: () => database.stop(),
    };
  } catch (error) {
    await database.stop();
    throw error;
  }
}
