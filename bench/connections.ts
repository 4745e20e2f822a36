// Connections for the bench's own bulk work (generating, copying, checking), set up as a bulk
// loader would be. Nothing measured runs on them: the package is timed with the server's defaults.
import type pg from 'pg';
import { flushStatistics } from './memory.js';

export type Task<T = unknown> = (client: pg.PoolClient) => Promise<T>;

/**
 * Runs `work` on one connection of `pool` with session_replication_role = replica, so that ordinary
 * triggers (the package's, and the foreign-key checks) do not fire and bulk writes pay for the data
 * only; and with work_mem large enough for the joins over every order line to stay in memory.
 */
export async function asLoader<T>(pool: pg.Pool, work: Task<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query(
      `set session_replication_role = replica; set work_mem = '256MB'; set maintenance_work_mem = '256MB'`,
    );
    const result = await work(client);
    await client.query('reset all');
    await flushStatistics(client);
    client.release();
    return result;
  } catch (error) {
    // Destroyed, not returned: the session may still be in replica mode.
    client.release(error instanceof Error ? error : new Error(String(error)));
    throw error;
  }
}

/** Runs the tasks at once, each on a connection of its own set up by asLoader. */
export async function inParallel(pool: pg.Pool, tasks: Task[]): Promise<void> {
  await Promise.all(tasks.map((task) => asLoader(pool, task)));
}
