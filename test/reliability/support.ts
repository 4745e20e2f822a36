// What the reliability suite shares: the figures every file adds to the run's one summary line,
// real parallel connections, set-based order generators, and invariants checked in SQL.
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, expect, inject } from 'vitest';
import { conserved, createTestDatabase, type TestDatabase } from '../helpers.js';
import { newClient } from '../setup/connections.js';

// ── figures ─────────────────────────────────────────────────────────────────

export interface Figures {
  /** Orders that went through a race with real parallel connections. */
  ordersRaced: number;
  /** The most connections one race used at once. */
  connections: number;
  /** Killed backends, crashed servers, stuck locks, bad orders. */
  faultsInjected: number;
  /** Hostile or out-of-range values and command lines tried. */
  inputsTried: number;
  /** Writes and calls a lesser role tried in order to gain a right or make the installer run its code. */
  escalationAttempts: number;
  /** Of those, the ones that worked (a passing suite has none). */
  escalationsSucceeded: number;
  /** The transaction isolation levels writers and runs used in races (each counted once in the summary). */
  isolationLevels: IsolationLevel[];
  /** Breaches of a guarantee the checks found (a passing suite has none). */
  violations: number;
}

/** Every transaction isolation level PostgreSQL offers (READ UNCOMMITTED is READ COMMITTED there). */
export const isolationLevels = ['read committed', 'repeatable read', 'serializable'] as const;
export type IsolationLevel = (typeof isolationLevels)[number];

export type Tally = Figures & {
  /** Records `count` breaches of `guarantee` (zero: none) and fails the test when there are any. */
  expectNone(guarantee: string, count: number, detail?: unknown): void;
};

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * The figures of one test file. Test files run in parallel processes (or one after the other), so
 * each writes its own JSON into a folder of the run (keyed by the run's template database, unique
 * per vitest run); the file that completes the set prints the one summary line.
 */
export function openFigures(testFile: string): Tally {
  const name = path.basename(fileURLToPath(testFile));
  const tally: Tally = {
    ordersRaced: 0,
    connections: 0,
    faultsInjected: 0,
    inputsTried: 0,
    escalationAttempts: 0,
    escalationsSucceeded: 0,
    isolationLevels: [],
    violations: 0,
    expectNone(guarantee, count, detail) {
      tally.violations += count;
      expect(
        count,
        `${guarantee}${count > 0 && detail !== undefined ? `: ${JSON.stringify(detail).slice(0, 2000)}` : ''}`,
      ).toBe(0);
    },
  };
  afterAll(() => publish(name, tally));
  return tally;
}

function publish(name: string, tally: Figures): void {
  const runs = path.join(os.tmpdir(), 'order-automation-reliability');
  const dir = path.join(runs, inject('template'));
  mkdirSync(dir, { recursive: true });
  // Runs of a few files only never complete their set: their folders go after a day.
  for (const old of readdirSync(runs)) {
    if (Date.now() - statSync(path.join(runs, old)).mtimeMs > 86_400_000)
      rmSync(path.join(runs, old), { recursive: true, force: true });
  }
  const figures: Figures = {
    ordersRaced: tally.ordersRaced,
    connections: tally.connections,
    faultsInjected: tally.faultsInjected,
    inputsTried: tally.inputsTried,
    escalationAttempts: tally.escalationAttempts,
    escalationsSucceeded: tally.escalationsSucceeded,
    isolationLevels: [...new Set(tally.isolationLevels)],
    violations: tally.violations,
  };
  // Written whole, then renamed: a reader never sees half a file.
  writeFileSync(path.join(dir, `${name}.tmp`), JSON.stringify(figures));
  renameSync(path.join(dir, `${name}.tmp`), path.join(dir, `${name}.json`));

  const expected = readdirSync(here).filter((f) => f.endsWith('.test.ts'));
  const reported = new Set(
    readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => f.replace(/\.json$/, '')),
  );
  if (!expected.every((f) => reported.has(f))) return; // another file will complete the set
  try {
    closeSync(openSync(path.join(dir, 'printed'), 'wx')); // exactly one file prints
  } catch {
    return;
  }
  const all = expected.map((f) => JSON.parse(readFileSync(path.join(dir, `${f}.json`), 'utf8')) as Figures);
  const sum = (key: Exclude<keyof Figures, 'isolationLevels'>) => all.reduce((total, f) => total + f[key], 0);
  const levels = new Set(all.flatMap((f) => f.isolationLevels));
  const n = (value: number) => value.toLocaleString('en-US');
  console.log(
    `reliability: ${n(sum('ordersRaced'))} orders raced, ${Math.max(...all.map((f) => f.connections))} connections at once, ` +
      `${n(sum('faultsInjected'))} faults injected, ${n(sum('inputsTried'))} inputs tried, ` +
      `${levels.size} isolation levels, ` +
      `${n(sum('escalationAttempts'))} escalation attempts, ${sum('escalationsSucceeded')} succeeded, ${sum('violations')} violations found`,
  );
  rmSync(dir, { recursive: true, force: true });
}

// ── databases ───────────────────────────────────────────────────────────────

/**
 * ORDER_AUTOMATION_TEST_SQL=<file>: SQL applied to every database this suite installs the package in,
 * right after it is migrated. To prove a test can fail, apply a broken definition (say, the batch
 * query without SKIP LOCKED) and watch it fail; to try a fix before it becomes a migration, apply it.
 */
export async function applyTestSql(db: pg.Pool | pg.ClientBase): Promise<void> {
  const file = process.env.ORDER_AUTOMATION_TEST_SQL;
  if (file) await db.query(readFileSync(file, 'utf8'));
}

/** A database of its own, cloned from the migrated template (with ORDER_AUTOMATION_TEST_SQL applied). */
export async function reliabilityDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  try {
    await applyTestSql(db.pool);
  } catch (error) {
    await db.drop();
    throw error;
  }
  return db;
}

// ── connections ─────────────────────────────────────────────────────────────

/** `count` real connections (one pg.Client each, so one backend each), all working at once. */
export async function parallel<T>(
  url: string,
  count: number,
  tally: Figures,
  work: (client: pg.Client, i: number) => Promise<T>,
): Promise<T[]> {
  const clients = await Promise.all(
    Array.from({ length: count }, async () => {
      const client = newClient({ connectionString: url });
      await client.connect();
      return client;
    }),
  );
  tally.connections = Math.max(tally.connections, count);
  try {
    return await Promise.all(clients.map((client, i) => work(client, i)));
  } finally {
    await Promise.all(clients.map((client) => client.end().catch(() => undefined)));
  }
}

/** The SQLSTATE of an error from pg or from the package's typed errors. */
export function sqlstateOf(error: unknown): string | undefined {
  const e = error as { sqlstate?: string; code?: string };
  return e.sqlstate ?? e.code;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ── orders ──────────────────────────────────────────────────────────────────

export interface Shop {
  buyers: number;
  stores: number;
  books: number;
}

export interface BulkOrders extends Shop {
  /** Order ids are prefix || 1..count; the deadline grows with the number, so it is also the due order. */
  prefix: string;
  count: number;
  state?: 'unpaid' | 'paid' | 'shipped';
  /** true: the deadline of the order's state (pay, or receipt when shipped) passed an hour ago. */
  due: boolean;
  /** Lines per order (distinct books), default 1. */
  lines?: number;
}

/**
 * Places orders set-based, as one statement each for orders and lines (the lifecycle triggers book
 * them in one pass): buyer i % buyers, store i % stores of a seedBookstore() shop.
 */
export async function bulkOrders(db: pg.Pool | pg.ClientBase, o: BulkOrders): Promise<string[]> {
  const { prefix, count, buyers, stores, books, state = 'unpaid', due, lines = 1 } = o;
  await db.query(
    `
    insert into new_order (order_id, user_id, store_id, pay_deadline)
    select $1 || i, 'buyer' || (1 + i % $3), 'store' || (1 + i % $4),
           case when $5 and $6 = 'unpaid' then now() - interval '1 hour' + i * interval '1 millisecond'
                else now() + interval '1 day' + i * interval '1 millisecond' end
      from generate_series(1, $2::integer) i`,
    [prefix, count, buyers, stores, due, state],
  );
  await db.query(
    `
    insert into new_order_detail (order_id, book_id, count, price)
    select $1 || i, 'book' || (1 + (i + k) % $3), 1 + k, 100 + 7 * k
      from generate_series(1, $2::integer) i, generate_series(0, $4::integer - 1) k`,
    [prefix, count, books, lines],
  );
  if (state !== 'unpaid') await db.query(`update new_order set state = 1 where starts_with(order_id, $1)`, [prefix]);
  if (state === 'shipped') {
    await db.query(
      `
      update new_order set state = 2, receipt_deadline =
        case when $2 then now() - interval '1 hour' else now() + interval '1 day' end
        + substr(order_id, length($1) + 1)::integer * interval '1 millisecond'
       where starts_with(order_id, $1)`,
      [prefix, due],
    );
  }
  return Array.from({ length: count }, (_, i) => `${prefix}${i + 1}`);
}

export async function statesOf(db: pg.Pool | pg.ClientBase, prefix: string): Promise<Record<string, number>> {
  const { rows } = await db.query<{ state: number; n: string }>(
    `select state, count(*) n from new_order where starts_with(order_id, $1) group by state order by state`,
    [prefix],
  );
  return Object.fromEntries(rows.map((r) => [String(r.state), Number(r.n)]));
}

// ── invariants ──────────────────────────────────────────────────────────────

/**
 * Every breach of the lifecycle the database can show, counted in SQL over the whole database:
 * an order whose stamps do not match its state ("half applied"), a history that does not replay
 * to the order's state, an order moved to the same state twice (processed twice), a paid order
 * cancelled by the automation, an automation event for a transition it may not make.
 */
export async function invariantBreaches(db: pg.Pool | pg.ClientBase): Promise<Record<string, number>> {
  const { rows } = await db.query<Record<string, string>>(`
    with ev as (
      select e.order_id, e.from_state, e.to_state, e.cause,
             lag(e.to_state) over w as previous_to, lag(e.id) over w as previous_id,
             row_number() over (partition by e.order_id order by e.id desc) as newest
        from order_automation.order_event e
      window w as (partition by e.order_id order by e.id)
    )
    select
      (select count(*) from new_order o where o.state not between 0 and 4) as state_out_of_range,
      (select count(*) from new_order o
        where (o.state in (1, 2, 3) and o.paid_at is null)
           or (o.state in (2, 3) and (o.shipped_at is null or o.receipt_deadline is null))
           or (o.state = 3 and o.received_at is null)
           or (o.state = 4 and o.cancelled_at is null)
           or (o.state in (0, 1, 2) and (o.received_at is not null or o.cancelled_at is not null))
           or (o.state = 0 and (o.paid_at is not null or o.shipped_at is not null))
           or o.pay_deadline is null) as stamps_not_matching_state,
      (select count(*) from ev where ev.previous_id is not null and ev.from_state is distinct from ev.previous_to)
        as history_chain_broken,
      (select count(*) from new_order o
        where not exists (select from ev where ev.order_id = o.order_id and ev.newest = 1 and ev.to_state = o.state))
        as history_not_ending_in_state,
      (select count(*) from (select order_id, to_state from order_automation.order_event
                              where from_state is distinct from to_state and to_state is not null
                              group by 1, 2 having count(*) > 1) x) as moved_to_a_state_twice,
      (select count(*) from (select order_id from order_automation.order_event
                              where from_state = 0 and to_state in (1, 4) group by 1 having count(distinct to_state) > 1) x)
        as both_paid_and_cancelled_unpaid,
      (select count(*) from order_automation.order_event t
        where t.cause = 'payment_timeout'
          and exists (select from order_automation.order_event p where p.order_id = t.order_id and p.from_state = 0 and p.to_state = 1))
        as paid_order_auto_cancelled,
      (select count(*) from order_automation.order_event e
        where (e.cause = 'payment_timeout' and (e.from_state, e.to_state) is distinct from (0::smallint, 4::smallint))
           or (e.cause = 'receipt_timeout' and (e.from_state, e.to_state) is distinct from (2::smallint, 3::smallint)))
        as automation_moved_the_wrong_way`);
  return Object.fromEntries(Object.entries(rows[0]!).map(([k, v]) => [k, Number(v)]));
}

/** Counts every breach into the tally and fails the test on any. */
export async function expectInvariants(db: pg.Pool | pg.ClientBase, tally: Tally): Promise<void> {
  const breaches = await invariantBreaches(db);
  const total = Object.values(breaches).reduce((a, b) => a + b, 0);
  tally.expectNone(
    'the lifecycle invariants hold',
    total,
    Object.fromEntries(Object.entries(breaches).filter(([, v]) => v > 0)),
  );
}

export type Conserved = Awaited<ReturnType<typeof conserved>>;

/** money and each (store, book)'s stock are what they were (helpers' conserved(), in SQL). */
export async function expectConserved(db: pg.Pool | pg.ClientBase, before: Conserved, tally: Tally): Promise<void> {
  const after = await conserved(db);
  const keys = new Set([...Object.keys(before.stock), ...Object.keys(after.stock)]);
  const stockMoved = [...keys].filter((k) => before.stock[k] !== after.stock[k]);
  tally.expectNone('money is conserved', after.money === before.money ? 0 : 1, {
    before: before.money,
    after: after.money,
  });
  tally.expectNone(
    'stock is conserved',
    stockMoved.length,
    stockMoved.slice(0, 5).map((k) => ({ key: k, before: before.stock[k], after: after.stock[k] })),
  );
}
