// npm run bench: measures the automation against the seed's loop and the physical floor on a
// throwaway database, prints one table and writes the same figures as JSON.
// Progress goes to stderr, the table to stdout.
import os from 'node:os';
import pg from 'pg';
import { buyersAlone, buyersDuringDrain } from './buyers.js';
import { conservation, generate, vacuumOrders } from './data.js';
import { drain } from './drain.js';
import { floor } from './floor.js';
import { parseOptions, USAGE, UsageError } from './options.js';
import { precision, type Precision } from './precision.js';
import { formatPrecisionTable, formatTable, ratios, writeJson, type Results } from './report.js';
import { copySeedTables, seedLoop } from './seed-loop.js';
import { startServer, type BenchServer } from './server.js';
import { sweepBatchSizes } from './sweep.js';
import { idleTicks } from './tick.js';

const SMALL_ORDERS = 10_000;
const TICK_CALLS = 41;
const BUYERS_ALONE_MS = 5_000;

const began = performance.now();
function log(line: string): void {
  process.stderr.write(`[bench ${((performance.now() - began) / 1000).toFixed(1).padStart(5)}s] ${line}\n`);
}

async function run(server: BenchServer, orders: number, batchSizes: number[]): Promise<Results> {
  const startedAt = new Date().toISOString();
  // The idle tick's point of comparison: the same data with 10,000 orders, in a database of its own.
  log(`generating ${SMALL_ORDERS.toLocaleString('en-US')} orders for the idle tick's comparison`);
  const smallUrl = await server.createDatabase(`order_automation_bench_${process.pid}_small`);
  const smallDataset = await withPool(smallUrl, 2, (small) => generate(small, SMALL_ORDERS));
  const url = await server.createDatabase(`order_automation_bench_${process.pid}`);
  // Enough connections for the buyers, a drain and the memory probe at once.
  const pool = new pg.Pool({ connectionString: url, max: 12 });
  try {
    log(`generating ${orders.toLocaleString('en-US')} orders`);
    const dataset = await generate(pool, orders);
    log(`generated in ${(dataset.generateMs / 1000).toFixed(1)} s; checking stock and money`);
    const generated = await conservation(pool);
    // The load's dirty pages written now, not during the measurements.
    await pool.query('checkpoint');
    log('idle ticks');
    const [smallTicks, largeTicks] = await idleTicks(
      [
        { url: smallUrl, asOf: smallDataset.idleAsOf },
        { url, asOf: dataset.idleAsOf },
      ],
      TICK_CALLS,
    );

    log('floor: cancel, confirm (rolled back), in one statement and in batches');
    const {
      rows: [settings],
    } = await pool.query<{ batch_size: number }>('select batch_size from order_automation.settings');
    const floors = {
      cancel: await floor(pool, 'cancel', dataset.drainAsOf),
      confirm: await floor(pool, 'confirm', dataset.drainAsOf),
    };
    const batchedFloors = {
      cancel: await floor(pool, 'cancel', dataset.drainAsOf, settings!.batch_size),
      confirm: await floor(pool, 'confirm', dataset.drainAsOf, settings!.batch_size),
    };
    await vacuumOrders(pool);

    log('copying the tables for the seed loop; drain cancel');
    await copySeedTables(pool);
    const cancel = await drain(pool, 'cancel', dataset.drainAsOf);
    log(`drain cancel: ${Math.round(cancel.ordersPerSecond)} orders/s; drain confirm`);
    const confirm = await drain(pool, 'confirm', dataset.drainAsOf);
    log(`drain confirm: ${Math.round(confirm.ordersPerSecond)} orders/s; seed loop`);
    // After the drains: the orders it loads must not inflate the drains' RSS.
    const seed = await seedLoop(pool, dataset.drainAsOf);
    log(`seed loop: ${Math.round(seed.ordersPerSecond)} orders/s`);
    await vacuumOrders(pool);

    log(`buyers alone for ${BUYERS_ALONE_MS / 1000} s`);
    const alone = await buyersAlone(url, BUYERS_ALONE_MS);
    log(`buyers during a drain of ${dataset.dueLater.toLocaleString('en-US')} orders`);
    const duringDrain = await buyersDuringDrain(url, pool, dataset.loadAsOf);
    await vacuumOrders(pool);

    const sweep = await sweepBatchSizes(url, pool, dataset, batchSizes, log);
    const precisionFigures = await precisionOn(server, orders);
    log('checking stock and money');
    const end = await conservation(pool);
    const {
      rows: [version],
    } = await pool.query<{ server_version: string }>('show server_version');

    const results = {
      startedAt,
      machine: { cpus: os.cpus().length, node: process.version, postgres: version!.server_version },
      dataset,
      smallDataset,
      drains: { cancel, confirm },
      seedLoop: seed,
      floors,
      batchedFloors,
      ticks: { small: smallTicks!, large: largeTicks! },
      buyers: { alone, duringDrain },
      batchSizes: sweep,
      precision: precisionFigures,
      conservation: { generated, end },
    };
    return { ...results, ratios: ratios(results), wallMs: performance.now() - began };
  } finally {
    await pool.end();
  }
}

/** The precision part, on a database of its own whose jobs pg_cron runs. */
async function precisionOn(server: BenchServer, orders: number): Promise<Precision> {
  const url = await server.createDatabase(`order_automation_bench_${process.pid}_precision`);
  return precision(url, server.url, orders, log);
}

async function withPool<T>(url: string, max: number, work: (pool: pg.Pool) => Promise<T>): Promise<T> {
  const pool = new pg.Pool({ connectionString: url, max });
  try {
    return await work(pool);
  } finally {
    await pool.end();
  }
}

async function main(): Promise<number> {
  let options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS'))) throw error;
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (options === 'help') {
    console.log(USAGE);
    return 0;
  }

  const server = await startServer(options.databaseUrl, log);
  // Ctrl-C must not leave a PostgreSQL running or databases behind.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`${signal}: stopping`);
      void server.stop().finally(() => process.exit(130));
    });
  }
  try {
    if (options.only === 'precision') {
      const figures = { startedAt: new Date().toISOString(), precision: await precisionOn(server, options.orders) };
      console.log(formatPrecisionTable(figures.precision));
      log(`figures written to ${await writeJson(figures)}`);
      return 0;
    }
    const results = await run(server, options.orders, options.batchSizes);
    console.log(formatTable(results));
    log(`figures written to ${await writeJson(results)}`);
    return 0;
  } finally {
    await server.stop();
  }
}

process.exitCode = await main();
