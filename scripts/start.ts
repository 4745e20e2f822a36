// npm start: a local bookstore database with pg_cron (kept in .pgdata/, reused across restarts),
// migrated, with the automation scheduled; then its live status until Ctrl-C.
// npm start -- --demo also seeds orders whose deadlines pass within a minute.
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { getDatabase } from './database/index.js';
import { getStatus, migrate, readOrderEvents, type JobStatus } from '../src/index.js';

const { values: flags } = parseArgs({
  options: { demo: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } },
});
if (flags.help) {
  console.log(
    'usage: npm start [-- --demo]\n  --demo  seed a small bookstore with orders about to pass their deadlines',
  );
  process.exit(0);
}

const dataDir = fileURLToPath(new URL('../.pgdata', import.meta.url));
const time = (d: Date | null | undefined) => (d ? d.toISOString().slice(11, 19) : '-');

async function seedDemo(pool: pg.Pool): Promise<void> {
  await pool.query(`
    insert into "user" (user_id, balance) values ('demo-buyer', 100000), ('demo-seller', 0) on conflict do nothing;
    insert into user_store (store_id, user_id) values ('demo-store', 'demo-seller') on conflict do nothing;
    insert into store (store_id, book_id, stock_level) values ('demo-store', 'demo-book', 10) on conflict do nothing;`);
  const tag = Date.now().toString(36);
  // One order nobody pays, and one shipped order nobody confirms: both due 20 seconds past pg_cron's
  // next minute tick. That tick's run waits for deadlines, so both are processed at their deadline,
  // within a second, not at a tick.
  const dueAt = `date_trunc('minute', now()) + interval '1 minute 20 seconds'`;
  await pool.query(
    `select order_automation.place_order($1, 'demo-buyer', 'demo-store', '[{"book_id":"demo-book","count":2,"price":1500}]')`,
    [`unpaid-${tag}`],
  );
  await pool.query(`update new_order set pay_deadline = ${dueAt} where order_id = $1`, [`unpaid-${tag}`]);
  await pool.query(
    `select order_automation.place_order($1, 'demo-buyer', 'demo-store', '[{"book_id":"demo-book","count":1,"price":2500}]')`,
    [`shipped-${tag}`],
  );
  await pool.query('select order_automation.pay_order($1), order_automation.ship_order($1)', [`shipped-${tag}`]);
  await pool.query(`update new_order set receipt_deadline = ${dueAt} where order_id = $1`, [`shipped-${tag}`]);
  console.log(
    `demo: placed unpaid-${tag} (2 x demo-book, never paid) and shipped-${tag} (paid, shipped, never confirmed).`,
  );
  const { rows } = await pool.query<{ due: Date }>(`select ${dueAt} as due`);
  console.log(
    `demo: both deadlines pass at ${time(rows[0]!.due)}, 20 s after pg_cron's next tick, whose run waits for them: watch for the events below.`,
  );
}

async function shelfAndBalance(pool: pg.Pool): Promise<string> {
  const { rows } = await pool.query<{ stock: number | null; balance: string | null }>(`
    select (select stock_level from store where store_id = 'demo-store' and book_id = 'demo-book') as stock,
           (select balance from "user" where user_id = 'demo-seller') as balance`);
  return rows[0]?.stock == null
    ? ''
    : ` (demo-book on the shelf: ${rows[0].stock}, demo-seller balance: ${rows[0].balance})`;
}

function jobLine(job: JobStatus): string {
  const last = job.lastRun
    ? `last run ${time(job.lastRun.startedAt)} ${job.lastRun.error ? `failed: ${job.lastRun.error}` : `processed ${job.lastRun.processed}`}`
    : 'not run yet';
  const due =
    job.dueNow === null
      ? ''
      : `; due now ${job.dueNow}, held ${job.held ?? 0}; next deadline ${time(job.nextDeadline)}`;
  return `  ${job.job.padEnd(23)} ${job.schedule.padEnd(11)} ${job.active ? `next run ${time(job.nextRunAt)}` : 'paused'}  ${last}${due}`;
}

const database = await getDatabase({ dataDir, log: (line) => console.log(`[database] ${line}`) });
const pool = new pg.Pool({ connectionString: database.url, max: 2 });
// An idle connection the server ends (a restart, say) is dropped by the pool and replaced by the next
// query; unheard, its 'error' event would end `npm start` with an uncaught exception.
pool.on('error', (error) => console.error(`[database] an idle connection ended: ${error.message}`));
let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.log('\nstopping: closing connections and the database server (data stays in .pgdata/)');
  await pool.end().catch(() => undefined);
  await database.stop();
  process.exit(0);
}
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());

try {
  const result = await migrate(database.url, { log: (line) => console.log(`[migrate] ${line}`) });
  console.log(result.migrations.length ? `installed ${result.migrations.join(', ')}` : 'schema up to date');
  console.log(`\nconnect:  psql ${database.url}`);
  console.log(`status:   DATABASE_URL=${database.url} npx order-automation status\n`);
  if (flags.demo) await seedDemo(pool);

  let lastEvent = (await pool.query<{ id: string }>('select coalesce(max(id), 0) id from order_automation.order_event'))
    .rows[0]!.id;
  if (flags.demo) lastEvent = '0';
  let lastStatus = '';
  console.log('live status (Ctrl-C stops):');
  while (!stopping) {
    const status = await getStatus(pool);
    // The two rules; the purge jobs have nothing to show in a demo.
    const lines = status.jobs
      .filter((j) => j.dueNow !== null && j.held !== null)
      .map(jobLine)
      .join('\n');
    if (lines !== lastStatus) {
      console.log(`${time(new Date())}\n${lines}`);
      lastStatus = lines;
    }
    for (const event of await readOrderEvents(pool, { afterId: Number(lastEvent) })) {
      console.log(
        `  event #${event.id} ${time(event.at)} ${event.orderId}: ${event.from ?? 'placed'} -> ${event.to ?? 'deleted'} (${event.cause})${await shelfAndBalance(pool)}`,
      );
      lastEvent = String(event.id);
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
} catch (error) {
  console.error(`npm start: ${(error as Error).message}`);
  await pool.end().catch(() => undefined);
  await database.stop();
  process.exit(1);
}
