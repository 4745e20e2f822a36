// An app of the classic bookstore course project, in SQL: its own schema (text ids, integer money, an
// integer state with -1 for cancelled, times in epoch seconds, a user_store keyed by (user_id, store_id),
// lines with no foreign key to their order) and its own bookkeeping, written the way such an app
// writes it: the lines before the order in one transaction, state changes by plain UPDATE, balances
// and stock moved by the app itself. Used by the adoption tests.
import pg from 'pg';

export const appSchema = `
  create table "user" (user_id text primary key, password text not null, balance integer not null, token text, terminal text);
  create table user_store (user_id text references "user" on delete cascade, store_id text, primary key (user_id, store_id));
  create table store (store_id text, book_id text, price integer, stock_level integer, primary key (store_id, book_id));
  create table new_order (order_id text primary key, user_id text references "user" on delete cascade, store_id text,
                          state integer, create_time integer, delivery_time integer);
  create table new_order_detail (order_id text, book_id text, count integer not null, price integer,
                                 primary key (order_id, book_id));
  create table book (id text primary key, title text, author text, price integer);
`;
/** The app's tables, the five the package adopts and one it must ignore. */
export const appTables = ['user', 'user_store', 'store', 'new_order', 'new_order_detail', 'book'];
/** The app's state codes: cancelled is -1. */
export const appStates = { unpaid: 0, paid: 1, shipped: 2, received: 3, cancelled: -1 } as const;

export interface AppShop {
  buyers: string[];
  sellers: string[];
  stores: string[];
  books: string[];
}

export async function createApp(
  pool: pg.Pool,
  options: { buyers?: number; stores?: number; books?: number; balance?: number; stock?: number } = {},
): Promise<AppShop> {
  const { buyers = 4, stores = 2, books = 3, balance = 1_000_000, stock = 10_000 } = options;
  const shop: AppShop = {
    buyers: Array.from({ length: buyers }, (_, i) => `buyer${i + 1}`),
    sellers: Array.from({ length: stores }, (_, i) => `seller${i + 1}`),
    stores: Array.from({ length: stores }, (_, i) => `store${i + 1}`),
    books: Array.from({ length: books }, (_, i) => `book${i + 1}`),
  };
  await pool.query(appSchema);
  await pool.query(
    `insert into "user" (user_id, password, balance, token, terminal)
                    select b, 'secret', $2, 'token-' || b, 'terminal' from unnest($1::text[]) b`,
    [shop.buyers, balance],
  );
  await pool.query(`insert into "user" (user_id, password, balance) select s, 'secret', 0 from unnest($1::text[]) s`, [
    shop.sellers,
  ]);
  await pool.query('insert into user_store (user_id, store_id) select unnest($1::text[]), unnest($2::text[])', [
    shop.sellers,
    shop.stores,
  ]);
  await pool.query(`insert into book (id, title, price) select b, 'Title of ' || b, 100 from unnest($1::text[]) b`, [
    shop.books,
  ]);
  await pool.query(
    `insert into store (store_id, book_id, price, stock_level)
     select s, b, 100 + row_number() over (partition by s order by b), $3
       from unnest($1::text[]) s, unnest($2::text[]) b`,
    [shop.stores, shop.books, stock],
  );
  return shop;
}

/** Money and stock as the app defines them: balances plus what paid and shipped orders hold; stock plus what orders not cancelled hold. */
export async function appConserved(db: pg.Pool): Promise<{ money: number; stock: Record<string, number> }> {
  const money = await db.query<{ money: string }>(`
    select (select coalesce(sum(balance), 0) from "user")
         + (select coalesce(sum(d.count::bigint * d.price), 0) from new_order o join new_order_detail d using (order_id)
             where o.state in (1, 2)) as money`);
  const { rows } = await db.query<{ key: string; total: string }>(`
    select s.store_id || '/' || s.book_id as key,
           s.stock_level + coalesce((select sum(d.count) from new_order o join new_order_detail d using (order_id)
                                      where o.store_id = s.store_id and d.book_id = s.book_id and o.state in (0, 1, 2, 3)), 0) as total
      from store s`);
  return { money: Number(money.rows[0]!.money), stock: Object.fromEntries(rows.map((r) => [r.key, Number(r.total)])) };
}

export type Outcome = 'done' | 'refused by the app' | 'refused by the database' | 'deadlocked';

export interface AppOptions {
  /** 'app': the app books its own changes (bookkeeping 'automation'); 'database': it only writes states (bookkeeping 'full'). */
  books: 'app' | 'database';
  /** How the app writes balances and stock: relative (balance = balance + $1) or absolute values it read before. */
  writes?: 'relative' | 'absolute';
  /** Runs after the app read the order and found it in the state it wants (to interleave another session). */
  afterReadingOrder?: () => Promise<void>;
  /** Runs between reading a balance or a stock level and writing it back, with absolute writes. */
  afterReadingValue?: () => Promise<void>;
}

/** The app's flows over one connection each, as it writes them. */
export class App {
  constructor(
    private readonly pool: pg.Pool,
    private readonly options: AppOptions,
  ) {}

  private async transaction(work: (client: pg.PoolClient) => Promise<Outcome>): Promise<Outcome> {
    const client = await this.pool.connect();
    try {
      await client.query('begin');
      const outcome = await work(client);
      await client.query(outcome === 'done' ? 'commit' : 'rollback');
      return outcome;
    } catch (error) {
      await client.query('rollback');
      // The package refusing a change (OA001 on an order the automation closed): the app's own writes roll back.
      const code = (error as { code?: string }).code;
      if (code?.startsWith('OA')) return 'refused by the database';
      // The app takes its balances and shelves before the order row, the automation the order row first:
      // PostgreSQL breaks such a cycle by failing one side, and everything it wrote rolls back.
      if (code === '40P01') return 'deadlocked';
      throw error;
    } finally {
      client.release();
    }
  }

  /** Moves a balance (or a stock level): relative, or as an absolute value read now and written after afterReadingValue. */
  private async move(client: pg.PoolClient, table: 'user' | 'store', key: string[], delta: number): Promise<void> {
    const [target, column, where] =
      table === 'user'
        ? ['"user"', 'balance', (n: number) => `user_id = $${n}`]
        : ['store', 'stock_level', (n: number) => `store_id = $${n} and book_id = $${n + 1}`];
    if (this.options.writes === 'absolute') {
      const { rows } = await client.query<{ value: number }>(
        `select ${column} as value from ${target} where ${where(1)}`,
        key,
      );
      await this.options.afterReadingValue?.();
      await client.query(`update ${target} set ${column} = $1 where ${where(2)}`, [rows[0]!.value + delta, ...key]);
    } else {
      await client.query(`update ${target} set ${column} = ${column} + $1 where ${where(2)}`, [delta, ...key]);
    }
  }

  private async total(client: pg.PoolClient, orderId: string): Promise<number> {
    const { rows } = await client.query<{ total: string }>(
      'select coalesce(sum(count * price), 0) as total from new_order_detail where order_id = $1',
      [orderId],
    );
    return Number(rows[0]!.total);
  }

  private async order(client: pg.PoolClient, orderId: string) {
    const { rows } = await client.query<{ state: number; user_id: string; store_id: string }>(
      'select state, user_id, store_id from new_order where order_id = $1',
      [orderId],
    );
    return rows[0];
  }

  /** Places an order: its lines first, then the order, in one transaction; the app reserves the books itself. */
  place(orderId: string, buyer: string, storeId: string, lines: { book: string; count: number }[]): Promise<Outcome> {
    return this.transaction(async (client) => {
      for (const line of lines) {
        const { rows } = await client.query<{ price: number; stock_level: number }>(
          'select price, stock_level from store where store_id = $1 and book_id = $2',
          [storeId, line.book],
        );
        if (!rows[0] || rows[0].stock_level < line.count) return 'refused by the app';
        await client.query('insert into new_order_detail (order_id, book_id, count, price) values ($1, $2, $3, $4)', [
          orderId,
          line.book,
          line.count,
          rows[0].price,
        ]);
        if (this.options.books === 'app') await this.move(client, 'store', [storeId, line.book], -line.count);
      }
      await client.query(
        `insert into new_order (order_id, user_id, store_id, state, create_time, delivery_time)
         values ($1, $2, $3, 0, extract(epoch from now())::integer, 0)`,
        [orderId, buyer, storeId],
      );
      return 'done';
    });
  }

  pay(orderId: string): Promise<Outcome> {
    return this.transaction(async (client) => {
      const order = await this.order(client, orderId);
      if (order?.state !== appStates.unpaid) return 'refused by the app';
      await this.options.afterReadingOrder?.();
      if (this.options.books === 'app') {
        const total = await this.total(client, orderId);
        const { rows } = await client.query<{ balance: number }>('select balance from "user" where user_id = $1', [
          order.user_id,
        ]);
        if (rows[0]!.balance < total) return 'refused by the app';
        await this.move(client, 'user', [order.user_id], -total);
      }
      // Unconditional, as an ORM writes it: the order may have changed since it was read.
      await client.query('update new_order set state = 1 where order_id = $1', [orderId]);
      return 'done';
    });
  }

  ship(orderId: string): Promise<Outcome> {
    return this.transaction(async (client) => {
      const { rowCount } = await client.query(
        'update new_order set state = 2, delivery_time = extract(epoch from now())::integer where order_id = $1 and state = 1',
        [orderId],
      );
      return rowCount === 1 ? 'done' : 'refused by the app';
    });
  }

  receive(orderId: string): Promise<Outcome> {
    return this.transaction(async (client) => {
      const order = await this.order(client, orderId);
      if (order?.state !== appStates.shipped) return 'refused by the app';
      await this.options.afterReadingOrder?.();
      if (this.options.books === 'app') {
        const total = await this.total(client, orderId);
        const { rows } = await client.query<{ user_id: string }>('select user_id from user_store where store_id = $1', [
          order.store_id,
        ]);
        await this.move(client, 'user', [rows[0]!.user_id], total);
      }
      await client.query('update new_order set state = 3 where order_id = $1', [orderId]);
      return 'done';
    });
  }

  cancel(orderId: string): Promise<Outcome> {
    return this.transaction(async (client) => {
      const order = await this.order(client, orderId);
      if (order?.state !== appStates.unpaid && order?.state !== appStates.paid) return 'refused by the app';
      await this.options.afterReadingOrder?.();
      if (this.options.books === 'app') {
        if (order.state === appStates.paid) {
          await this.move(client, 'user', [order.user_id], await this.total(client, orderId));
        }
        const { rows } = await client.query<{ book_id: string; count: number }>(
          'select book_id, count from new_order_detail where order_id = $1 order by book_id',
          [orderId],
        );
        for (const line of rows) await this.move(client, 'store', [order.store_id, line.book_id], line.count);
      }
      await client.query('update new_order set state = -1 where order_id = $1', [orderId]);
      return 'done';
    });
  }
}

/** The app's tables as definitions (columns, constraints, indexes, triggers, comments, privileges), one line each. */
export async function appDefinitions(db: pg.Pool): Promise<string[]> {
  const { rows } = await db.query<{ line: string }>(
    `
    with t as (select c.oid, c.relname from pg_class c
                where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and c.relname = any ($1::text[]))
    select line from (
      select 'table ' || t.relname || ' ' || c.relkind::text || ' ' || pg_get_userbyid(c.relowner) || ' '
             || coalesce(c.reloptions::text, '') || ' ' || coalesce(obj_description(t.oid, 'pg_class'), '') as line
        from t join pg_class c on c.oid = t.oid
      union all
      select 'column ' || t.relname || ' ' || a.attnum || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
             || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' '
             || coalesce(col_description(t.oid, a.attnum), '')
        from t join pg_attribute a on a.attrelid = t.oid and a.attnum > 0 and not a.attisdropped
        left join pg_attrdef d on d.adrelid = t.oid and d.adnum = a.attnum
      union all
      select 'constraint ' || t.relname || ' ' || x.conname || ' ' || pg_get_constraintdef(x.oid)
        from t join pg_constraint x on x.conrelid = t.oid
      union all
      select 'index ' || pg_get_indexdef(i.indexrelid) from t join pg_index i on i.indrelid = t.oid
      union all
      select 'trigger ' || pg_get_triggerdef(g.oid) from t join pg_trigger g on g.tgrelid = t.oid and not g.tgisinternal
      union all
      select 'privilege ' || t.relname || ' ' || coalesce(p.grantee::regrole::text, 'public') || ' ' || p.privilege_type
        from t join pg_class c on c.oid = t.oid
        cross join lateral aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) p
    ) x order by line`,
    [appTables],
  );
  return rows.map((r) => r.line);
}

/** md5 of each app table's rows (its own columns only), in a stable order. */
export async function appChecksums(db: pg.Pool, columns?: Record<string, string[]>): Promise<Record<string, string>> {
  const sums: Record<string, string> = {};
  const { rows: present } = await db.query<{ name: string }>(
    `select relname as name from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r' and relname = any ($1::text[])`,
    [appTables],
  );
  for (const table of appTables.filter((t) => present.some((p) => p.name === t))) {
    const list = columns?.[table]?.map((c) => `"${c}"`).join(', ') ?? '*';
    const { rows } = await db.query<{ md5: string }>(
      `select md5(coalesce(string_agg(r::text, E'\\n' order by r::text), '')) as md5 from (select ${list} from "${table}") r`,
    );
    sums[table] = rows[0]!.md5;
  }
  return sums;
}

/** The app's own columns of each of its tables, as it created them. */
export async function appColumns(db: pg.Pool): Promise<Record<string, string[]>> {
  const { rows } = await db.query<{ table: string; columns: string[] }>(
    `select c.relname as table, array_agg(a.attname::text order by a.attnum) as columns
       from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
      where c.relnamespace = 'public'::regnamespace and c.relname = any ($1::text[])
      group by c.relname`,
    [appTables],
  );
  return Object.fromEntries(rows.map((r) => [r.table, r.columns]));
}
