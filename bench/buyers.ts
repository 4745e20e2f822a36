// Buyers at the till: each places an order of three books and pays it, in one transaction, in a
// loop; the latency of that transaction is what a drain must not spoil.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { BENCH_BUYERS, BOOKS_PER_STORE, STORES } from './data.js';
import { drain, type Drain } from './drain.js';
import { percentile } from './stats.js';

interface Purchase {
  startedAt: number;
  ms: number;
}

export interface Latency {
  purchases: number;
  p50Ms: number;
  p99Ms: number;
}

interface Buyers {
  /** Stops every buyer after its current purchase; resolves to every purchase made. */
  stop(): Promise<Purchase[]>;
}

const random = (n: number) => 1 + Math.floor(Math.random() * n);

/** Three distinct books of one store, one copy each. */
function basket(): { storeId: string; items: string } {
  const books = new Set<number>();
  while (books.size < 3) books.add(random(BOOKS_PER_STORE));
  return {
    storeId: `store${random(STORES)}`,
    items: JSON.stringify([...books].map((book) => ({ book_id: `book${book}`, count: 1, price: 1000 }))),
  };
}

async function buy(client: pg.Client, orderId: string, buyerId: string): Promise<void> {
  const { storeId, items } = basket();
  await client.query('begin');
  try {
    await client.query('select from order_automation.place_order($1, $2, $3, $4::jsonb)', [
      orderId,
      buyerId,
      storeId,
      items,
    ]);
    await client.query('select from order_automation.pay_order($1)', [orderId]);
    await client.query('commit');
  } catch (error) {
    await client.query('rollback').catch(() => undefined);
    throw error;
  }
}

/** Starts BENCH_BUYERS buyers on connections of their own; `tag` keeps order ids unique per round. */
async function startBuyers(url: string, tag: string): Promise<Buyers> {
  const clients = await Promise.all(
    Array.from({ length: BENCH_BUYERS }, async () => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      return client;
    }),
  );
  let stopped = false;
  const loops = clients.map(async (client, i) => {
    const purchases: Purchase[] = [];
    try {
      for (let n = 1; !stopped; n++) {
        const startedAt = performance.now();
        await buy(client, `bench-${tag}-${i + 1}-${n}`, `bench-buyer${i + 1}`);
        purchases.push({ startedAt, ms: performance.now() - startedAt });
      }
      return purchases;
    } finally {
      await client.end();
    }
  });
  // One buyer failing stops them all; stop() reports the failure.
  for (const loop of loops) loop.catch(() => (stopped = true));
  return {
    async stop() {
      stopped = true;
      return (await Promise.all(loops)).flat();
    },
  };
}

/** Purchases started before this are warm-up (new connections, PL/pgSQL compiled): not counted. */
const WARM_UP_MS = 500;

function latency(purchases: Purchase[], from: number, to: number): Latency {
  const samples = purchases.filter((p) => p.startedAt >= from && p.startedAt < to).map((p) => p.ms);
  return { purchases: samples.length, p50Ms: percentile(samples, 50), p99Ms: percentile(samples, 99) };
}

/** Buyer latency with nothing else running, over `durationMs`. */
export async function buyersAlone(url: string, durationMs: number): Promise<Latency> {
  const buyers = await startBuyers(url, `alone${Date.now()}`);
  const from = performance.now() + WARM_UP_MS;
  await sleep(WARM_UP_MS + durationMs);
  return latency(await buyers.stop(), from, Number.POSITIVE_INFINITY);
}

/** Buyer latency of the purchases started while a cancel drain at `asOf` runs, and that drain. */
export async function buyersDuringDrain(
  url: string,
  pool: pg.Pool,
  asOf: Date,
  batchSize: number | null = null,
): Promise<Latency & { drain: Drain }> {
  const buyers = await startBuyers(url, `drain${Date.now()}`);
  await sleep(WARM_UP_MS);
  const from = performance.now();
  const drained = await drain(pool, 'cancel', asOf, batchSize).catch(async (error: unknown) => {
    await buyers.stop().catch(() => undefined);
    throw error;
  });
  const to = performance.now();
  return { ...latency(await buyers.stop(), from, to), drain: drained };
}
