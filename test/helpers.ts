// What every test file uses: a database of its own, cloned from the migrated template, and a few
// helpers to seed a bookstore and read it back.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { endPool, newClient, newPool } from './setup/connections.js';
import { databaseUrl } from './setup/urls.js';

export interface TestDatabase {
  name: string;
  url: string;
  pool: pg.Pool;
  /** Drops the database once its pool's connections have closed; idempotent. */
  drop(): Promise<void>;
}

/** Runs `work` as the server's superuser, connected to the cron database (to create and drop databases and roles). */
export async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = newClient({ connectionString: inject('serverUrl') });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** A fresh database cloned from the migrated template (about 50 ms). */
export async function createTestDatabase(options: { template?: string | null } = {}): Promise<TestDatabase> {
  const name = `t_${randomBytes(6).toString('hex')}`;
  const template = options.template === undefined ? inject('template') : options.template;
  await admin((c) => c.query(template ? `create database ${name} template ${template}` : `create database ${name}`));
  const url = databaseUrl(inject('serverUrl'), name);
  const pool = newPool({ connectionString: url, max: 20 });
  let dropping: Promise<void> | undefined;
  return {
    name,
    url,
    pool,
    // WITH (FORCE) ends what the test itself left connected (a client it never ended, say).
    drop: () =>
      (dropping ??= (async () => {
        await endPool(pool);
        await admin((c) => c.query(`drop database if exists ${name} with (force)`));
      })()),
  };
}

export interface Bookstore {
  buyers: string[];
  sellers: string[];
  stores: string[];
  books: string[];
}

/** Seeds users with balance, stores owned by sellers, and stock of every book in every store. */
export async function seedBookstore(
  db: pg.Pool | pg.ClientBase,
  options: { buyers?: number; stores?: number; books?: number; balance?: number; stock?: number } = {},
): Promise<Bookstore> {
  const { buyers = 3, stores = 2, books = 3, balance = 100_000, stock = 100 } = options;
  const shop: Bookstore = {
    buyers: Array.from({ length: buyers }, (_, i) => `buyer${i + 1}`),
    sellers: Array.from({ length: stores }, (_, i) => `seller${i + 1}`),
    stores: Array.from({ length: stores }, (_, i) => `store${i + 1}`),
    books: Array.from({ length: books }, (_, i) => `book${i + 1}`),
  };
  await db.query(`insert into "user" (user_id, balance) select unnest($1::text[]), $2::bigint`, [shop.buyers, balance]);
  await db.query(`insert into "user" (user_id, balance) select unnest($1::text[]), 0`, [shop.sellers]);
  await db.query('insert into user_store (store_id, user_id) select unnest($1::text[]), unnest($2::text[])', [
    shop.stores,
    shop.sellers,
  ]);
  await db.query(
    'insert into store (store_id, book_id, stock_level) select s, b, $3 from unnest($1::text[]) s, unnest($2::text[]) b',
    [shop.stores, shop.books, stock],
  );
  return shop;
}

export async function one<T extends pg.QueryResultRow>(
  db: pg.Pool | pg.ClientBase,
  text: string,
  values: unknown[] = [],
): Promise<T> {
  const { rows } = await db.query<T>(text, values);
  if (rows.length !== 1) throw new Error(`expected one row, got ${rows.length}: ${text}`);
  return rows[0]!;
}

export async function stockOf(db: pg.Pool | pg.ClientBase, storeId: string, bookId: string): Promise<number> {
  return (
    await one<{ stock_level: number }>(db, 'select stock_level from store where store_id = $1 and book_id = $2', [
      storeId,
      bookId,
    ])
  ).stock_level;
}

export async function balanceOf(db: pg.Pool | pg.ClientBase, userId: string): Promise<number> {
  return Number(
    (await one<{ balance: string }>(db, 'select balance from "user" where user_id = $1', [userId])).balance,
  );
}

/** conserved quantities: money (balances + totals held by paid/shipped orders) and stock per store/book. */
export async function conserved(
  db: pg.Pool | pg.ClientBase,
): Promise<{ money: number; stock: Record<string, number> }> {
  const money = await one<{ money: string }>(
    db,
    `
    select (select coalesce(sum(balance), 0) from "user")
         + (select coalesce(sum(d.count::bigint * d.price), 0) from new_order o join new_order_detail d using (order_id) where o.state in (1, 2))
           as money`,
  );
  const { rows } = await db.query<{ key: string; total: string }>(`
    select s.store_id || '/' || s.book_id as key,
           s.stock_level + coalesce((select sum(d.count) from new_order o join new_order_detail d using (order_id)
                                      where o.store_id = s.store_id and d.book_id = s.book_id and o.state in (0, 1, 2, 3)), 0) as total
      from store s`);
  return { money: Number(money.money), stock: Object.fromEntries(rows.map((r) => [r.key, Number(r.total)])) };
}
