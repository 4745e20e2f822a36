// The bench's bookstore, generated set-based in SQL: stores, buyers, orders in every state with
// their lines and history, and stock and balances that agree with them (invariants).
import type pg from 'pg';
import { inParallel, asLoader } from './connections.js';

export const STORES = 100;
export const BOOKS_PER_STORE = 1000;
/** Every book starts with this many copies; the shelf holds what orders in states 0–3 do not. */
const INITIAL_STOCK = 10_000;
/** What every buyer had before buying: their balance is this minus what their orders hold or paid. */
const DEPOSIT = 10_000_000;
/** The buyers of the latency test: rich enough never to be refused. */
export const BENCH_BUYERS = 8;
const BENCH_BUYER_BALANCE = 1_000_000_000_000;

/**
 * Order i (1..n) belongs to category i % 10, so that every kind of order is spread over the whole
 * table as in a real shop, not bunched in a few pages:
 *   0 unpaid, due at drainAsOf          1 unpaid, due only at loadAsOf (the drain under buyers)
 *   2 shipped, due at drainAsOf         3 shipped, due in 14 days
 *   4 paid                              5–8 received                  9 cancelled
 */
export interface Dataset {
  orders: number;
  /** Unpaid orders due at drainAsOf, and shipped ones. */
  dueCancel: number;
  dueConfirm: number;
  /** Unpaid orders that become due between drainAsOf and loadAsOf. */
  dueLater: number;
  /** Before every deadline: nothing is due. */
  idleAsOf: Date;
  drainAsOf: Date;
  loadAsOf: Date;
  generateMs: number;
}

// Orders from..to ($1, $2) of n ($3), bought by $4 buyers, at $5: order i's buyer, store and category
// follow from i; its times put it where its category belongs relative to $5 (see Dataset).
const ORDERS_SQL = `
insert into public.new_order (order_id, user_id, store_id, state, created_at, paid_at, shipped_at,
                              received_at, cancelled_at, pay_deadline, receipt_deadline)
select 'o' || lpad(i::text, 9, '0'),
       'buyer' || (1 + (i::bigint * 7919) % $4),
       'store' || (1 + (i / 10) % ${STORES}),
       case c.cat when 0 then 0 when 1 then 0 when 2 then 2 when 3 then 2 when 4 then 1 when 9 then 4 else 3 end,
       c.created,
       case when c.cat between 2 and 8 then c.created + interval '5 minutes' end,
       case when c.cat = 3 then $5::timestamptz - interval '1 hour'
            when c.cat = 2 or c.cat between 5 and 8 then c.created + interval '1 day' end,
       case when c.cat between 5 and 8 then c.created + interval '2 days' end,
       case when c.cat = 9 then c.created + interval '10 minutes' end,
       c.created + interval '10 minutes',
       case when c.cat = 3 then $5::timestamptz + interval '14 days'
            when c.cat = 2 or c.cat between 5 and 8 then c.created + interval '1 day 1 minute' end
  from generate_series($1::integer, $2::integer) i,
       lateral (select i % 10 as cat,
                       case when i % 10 = 1
                            then $5::timestamptz - interval '6 hours' + (i::float8 / $3) * interval '5 hours'
                            else $5::timestamptz - interval '60 days' + (i::float8 / $3) * interval '58 days'
                       end as created) c`;

// Three distinct books of the order's store per order; (i / 1000) varies the books within a store.
const LINES_SQL = `
insert into public.new_order_detail (order_id, book_id, count, price)
select 'o' || lpad(i::text, 9, '0'),
       'book' || (1 + ((i / 1000)::bigint * 7 + i::bigint * 37 + k * 311) % ${BOOKS_PER_STORE}),
       1 + (i + k) % 3,
       500 + (i::bigint * 13 + k * 101) % 5000
  from generate_series($1::integer, $2::integer) i, generate_series(0, 2) k`;

// The history the orders went through to reach their state (placed, paid, shipped, ...).
const HISTORY_SQL = `
insert into order_automation.order_event (order_id, from_state, to_state, cause, at)
select o.order_id, e.from_state, e.to_state, 'bench_history', e.at
  from public.new_order o
 cross join lateral (values (null::smallint, 0::smallint, o.created_at), (0, 1, o.paid_at), (1, 2, o.shipped_at),
                            (2, 3, o.received_at), (0, 4, o.cancelled_at)) e(from_state, to_state, at)
 where e.at is not null and o.order_id between 'o' || lpad($1::text, 9, '0') and 'o' || lpad($2::text, 9, '0')`;

const STOCK_SQL = `
update public.store s set stock_level = ${INITIAL_STOCK} - held.count
  from (select o.store_id, d.book_id, sum(d.count)::integer as count
          from public.new_order o join public.new_order_detail d using (order_id)
         where o.state in (0, 1, 2, 3)
         group by o.store_id, d.book_id) held
 where s.store_id = held.store_id and s.book_id = held.book_id`;

// Buyers paid for their orders in states 1–3 (3: the money went on to the seller).
const BALANCES_SQL = [
  `
update public."user" u set balance = u.balance - spent.total
  from (select o.user_id, sum(d.count::bigint * d.price) as total
          from public.new_order o join public.new_order_detail d using (order_id)
         where o.state in (1, 2, 3)
         group by o.user_id) spent
 where u.user_id = spent.user_id`,
  `
update public."user" u set balance = u.balance + earned.total
  from (select us.user_id, sum(d.count::bigint * d.price) as total
          from public.new_order o
          join public.new_order_detail d using (order_id)
          join public.user_store us using (store_id)
         where o.state = 3
         group by us.user_id) earned
 where u.user_id = earned.user_id`,
];

/** Fills a freshly migrated database with `orders` orders; see Dataset. */
export async function generate(pool: pg.Pool, orders: number): Promise<Dataset> {
  const started = performance.now();
  const t0 = (await pool.query<{ now: Date }>('select now()')).rows[0]!.now;
  const buyers = Math.max(100, Math.floor(orders / 10));
  await asLoader(pool, async (client) => {
    await client.query(
      `insert into public."user" (user_id, balance) select 'seller' || s, 0 from generate_series(1, ${STORES}) s`,
    );
    await client.query(
      `insert into public.user_store (store_id, user_id) select 'store' || s, 'seller' || s from generate_series(1, ${STORES}) s`,
    );
    await client.query(`insert into public.store (store_id, book_id, stock_level)
                        select 'store' || s, 'book' || b, ${INITIAL_STOCK} from generate_series(1, ${STORES}) s, generate_series(1, ${BOOKS_PER_STORE}) b`);
    await client.query(
      `insert into public."user" (user_id, balance) select 'buyer' || u, ${DEPOSIT} from generate_series(1, $1::integer) u`,
      [buyers],
    );
    await client.query(
      `insert into public."user" (user_id, balance) select 'bench-buyer' || u, ${BENCH_BUYER_BALANCE} from generate_series(1, ${BENCH_BUYERS}) u`,
    );
  });

  // Bulk loading into indexed tables is several times slower than building the indexes afterwards.
  const indexes = await dropSecondaryIndexes(pool, [
    'public.new_order',
    'public.new_order_detail',
    'order_automation.order_event',
  ]);
  // Two halves on two connections: the machine has two cores.
  const halves = [
    [1, Math.floor(orders / 2)],
    [Math.floor(orders / 2) + 1, orders],
  ] as const;
  for (const [sql, ...more] of [[ORDERS_SQL, orders, buyers, t0], [LINES_SQL], [HISTORY_SQL]] as const) {
    await inParallel(
      pool,
      halves.map(
        ([from, to]) =>
          (client) =>
            client.query(sql, [from, to, ...more]),
      ),
    );
  }
  await inParallel(
    pool,
    indexes.map((definition) => (client) => client.query(definition)),
  );
  await inParallel(pool, [
    (client) => client.query(STOCK_SQL),
    async (client) => {
      for (const sql of BALANCES_SQL) await client.query(sql);
    },
  ]);
  await pool.query('vacuum analyze');

  const idleAsOf = new Date(t0.getTime() - 61 * 86_400_000);
  const drainAsOf = new Date(t0.getTime() - 12 * 3_600_000);
  const {
    rows: [counts],
  } = await pool.query<{ due_cancel: number; due_confirm: number; due_later: number }>(
    `
    select count(*) filter (where state = 0 and pay_deadline <= $1)::integer as due_cancel,
           count(*) filter (where state = 2 and receipt_deadline <= $1)::integer as due_confirm,
           count(*) filter (where state = 0 and pay_deadline > $1 and pay_deadline <= $2)::integer as due_later
      from public.new_order`,
    [drainAsOf, t0],
  );
  return {
    orders,
    dueCancel: counts!.due_cancel,
    dueConfirm: counts!.due_confirm,
    dueLater: counts!.due_later,
    idleAsOf,
    drainAsOf,
    loadAsOf: t0,
    generateMs: performance.now() - started,
  };
}

/** What autovacuum does after a drain, done now so that it does not run during a measurement. */
export async function vacuumOrders(pool: pg.Pool): Promise<void> {
  await pool.query('vacuum analyze public.new_order, public.store, public."user", order_automation.order_event');
}

/** Drops the indexes of `tables` that back no constraint; returns their definitions, to recreate them. */
async function dropSecondaryIndexes(pool: pg.Pool, tables: string[]): Promise<string[]> {
  const { rows } = await pool.query<{ name: string; definition: string }>(
    `
    select i.indexrelid::regclass::text as name, pg_get_indexdef(i.indexrelid) as definition
      from pg_index i
     where i.indrelid = any ($1::regclass[])
       and not exists (select from pg_constraint c where c.conindid = i.indexrelid)`,
    [tables],
  );
  if (rows.length > 0) await pool.query(`drop index ${rows.map((r) => r.name).join(', ')}`);
  return rows.map((r) => r.definition);
}

/** conserved quantities; the bench checks that its runs leave them as generated. */
export interface Conservation {
  /** Books whose shelf plus the copies held by orders in states 0–3 is not INITIAL_STOCK: 0 when stock is conserved. */
  booksOffBalance: number;
  /** All balances plus the totals held by orders in states 1 and 2, as the text of a numeric sum. */
  money: string;
}

export async function conservation(pool: pg.Pool): Promise<Conservation> {
  const { rows } = await asLoader(pool, (client) =>
    client.query<Conservation>(`
    select (select count(*)::integer
              from public.store s
              left join (select o.store_id, d.book_id, sum(d.count) as count
                           from public.new_order o join public.new_order_detail d using (order_id)
                          where o.state in (0, 1, 2, 3)
                          group by o.store_id, d.book_id) held
                on held.store_id = s.store_id and held.book_id = s.book_id
             where s.stock_level + coalesce(held.count, 0) <> ${INITIAL_STOCK}) as "booksOffBalance",
           ((select sum(balance) from public."user")
            + (select coalesce(sum(d.count::bigint * d.price), 0)
                 from public.new_order o join public.new_order_detail d using (order_id)
                where o.state in (1, 2)))::text as money`),
  );
  return rows[0]!;
}
