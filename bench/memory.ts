// What a run costs in memory: the bench's own peak RSS while it runs, and the bytes PostgreSQL
// spilled to temp files meanwhile (a drain that kept every due order in memory would show in one).
import type pg from 'pg';

export interface MemoryUse {
  /** This process's RSS when the work began, and its peak while it ran. */
  rssBeforeBytes: number;
  peakRssBytes: number;
  tempBytes: number;
}

/** RSS is sampled this often; a drain's batches take longer than this. */
const SAMPLE_MS = 10;

/**
 * Runs `work` (on `client`) while sampling this process's RSS, and reads the database's
 * pg_stat_database.temp_bytes before and after it through `pool`.
 */
export async function measureMemory<T>(
  pool: pg.Pool,
  client: pg.ClientBase,
  work: () => Promise<T>,
): Promise<T & MemoryUse> {
  const tempBefore = await tempBytes(pool);
  const rssBeforeBytes = process.memoryUsage.rss();
  let peakRssBytes = rssBeforeBytes;
  const sampler = setInterval(() => (peakRssBytes = Math.max(peakRssBytes, process.memoryUsage.rss())), SAMPLE_MS);
  try {
    const result = await work();
    peakRssBytes = Math.max(peakRssBytes, process.memoryUsage.rss());
    await flushStatistics(client);
    return { ...result, rssBeforeBytes, peakRssBytes, tempBytes: (await tempBytes(pool)) - tempBefore };
  } finally {
    clearInterval(sampler);
  }
}

async function tempBytes(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ temp_bytes: string }>(
    'select temp_bytes from pg_stat_database where datname = current_database()',
  );
  return Number(rows[0]!.temp_bytes);
}

/**
 * Publishes the statistics of `client`'s backend now. A backend publishes them when it goes idle,
 * at most once a second unless asked to; it does so before it answers, so they are visible to
 * every session once this returns. Sessions that wrote temp files call it before a measurement
 * starts, so that their bytes are not counted in it.
 */
export async function flushStatistics(client: pg.ClientBase): Promise<void> {
  await client.query('select pg_stat_force_next_flush()');
}
