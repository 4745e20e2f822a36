// Money and stock are conserved under every transaction isolation level, whoever writes: a buyer
// paying in a REPEATABLE READ transaction while another adds a line, writers of lines racing payers,
// cancellers and the automation at each level, and single statements that change orders and their
// lines together (a data-modifying WITH). A loser may be refused (40001, or the lifecycle's own
// codes); the books always balance. Every check is SQL over the database.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { balanceOf, conserved, seedBookstore, type TestDatabase } from '../helpers.js';
import {
  bulkOrders,
  expectConserved,
  expectInvariants,
  type IsolationLevel,
  isolationLevels,
  openFigures,
  parallel,
  reliabilityDatabase,
  type Shop,
  sleep,
  sqlstateOf,
} from './support.js';

const tally = openFigures(import.meta.url);
const shop: Shop = { buyers: 12, stores: 3, books: 6 };
let db: TestDatabase;

beforeAll(async () => {
  db = await reliabilityDatabase();
  await seedBookstore(db.pool, { ...shop, balance: 1_000_000_000_000, stock: 10_000_000 });
});
afterAll(async () => db?.drop());

const short = (level: IsolationLevel) => level.split(' ')[0]!.slice(0, 4);

/** Runs `statements` in one transaction at `level`; a serialization failure (40001) is retried. */
async function inTransaction(
  client: pg.ClientBase,
  level: IsolationLevel,
  statements: [string, unknown[]?][],
  retries = { count: 0 },
): Promise<void> {
  for (;;) {
    await client.query(`begin isolation level ${level}`);
    try {
      for (const [text, values] of statements) await client.query(text, values);
      await client.query('commit');
      return;
    } catch (error) {
      await client.query('rollback');
      if (sqlstateOf(error) !== '40001') throw error;
      retries.count++;
    }
  }
}

/** A promise and the function that settles it: one step of a choreography between connections. */
function signal(): { done: Promise<void>; give: () => void } {
  let give!: () => void;
  const done = new Promise<void>((resolve) => (give = resolve));
  return { done, give };
}

describe('a line added while the buyer pays', () => {
  test.each(isolationLevels)(
    'under %s, a line of 50 books × 1,000 added after the payer read the order: the payment covers all 51 books or fails with 40001 (and its retry does), and the refund or the seller credit that follows is the same 51,000',
    async (level) => {
      tally.isolationLevels.push(level);
      const before = await conserved(db.pool);
      const seller = await balanceOf(db.pool, 'seller1');
      for (const then of ['cancel', 'confirm'] as const) {
        const id = `late_line_${short(level)}_${then}`;
        await db.pool.query(`insert into new_order (order_id, user_id, store_id) values ($1, 'buyer1', 'store1')`, [
          id,
        ]);
        await db.pool.query(
          `insert into new_order_detail (order_id, book_id, count, price) values ($1, 'book1', 1, 1000)`,
          [id],
        );
        const balance = await balanceOf(db.pool, 'buyer1');
        const snapshotTaken = signal();
        const lineAdded = signal();
        let payerError: string | undefined;
        await parallel(db.url, 2, tally, async (client, i) => {
          if (i === 1) {
            await snapshotTaken.done;
            await client.query(
              `insert into new_order_detail (order_id, book_id, count, price) values ($1, 'book2', 50, 1000)`,
              [id],
            );
            lineAdded.give();
            return;
          }
          // The payer's app reads the order (its snapshot, under REPEATABLE READ and SERIALIZABLE),
          // then pays it.
          await client.query(`begin isolation level ${level}`);
          await client.query('select sum(count::bigint * price) from new_order_detail where order_id = $1', [id]);
          snapshotTaken.give();
          await lineAdded.done;
          try {
            await client.query('update new_order set state = 1 where order_id = $1', [id]);
            await client.query('commit');
          } catch (error) {
            payerError = sqlstateOf(error);
            await client.query('rollback');
            // An app retries a serialization failure: a new transaction sees both lines.
            if (payerError === '40001')
              await inTransaction(client, level, [['update new_order set state = 1 where order_id = $1', [id]]]);
          }
        });
        tally.ordersRaced++;
        expect([undefined, '40001']).toContain(payerError);
        const debited = balance - (await balanceOf(db.pool, 'buyer1'));
        tally.expectNone('the payment debits the total of every line of the order', debited === 51_000 ? 0 : 1, {
          level,
          debited,
          payerError,
        });

        await parallel(db.url, 1, tally, async (client) => {
          if (then === 'cancel') {
            await inTransaction(client, level, [['update new_order set state = 4 where order_id = $1', [id]]]);
          } else {
            await inTransaction(client, level, [['update new_order set state = 2 where order_id = $1', [id]]]);
            await inTransaction(client, level, [['update new_order set state = 3 where order_id = $1', [id]]]);
          }
        });
        if (then === 'cancel') {
          tally.expectNone(
            'the refund gives back what the payment took',
            (await balanceOf(db.pool, 'buyer1')) === balance ? 0 : 1,
            { level, balance, after: await balanceOf(db.pool, 'buyer1') },
          );
        }
      }
      tally.expectNone(
        'the seller is credited the total of every line',
        (await balanceOf(db.pool, 'seller1')) - seller === 51_000 ? 0 : 1,
        { level, credited: (await balanceOf(db.pool, 'seller1')) - seller },
      );
      await expectInvariants(db.pool, tally);
      await expectConserved(db.pool, before, tally);
    },
    60_000,
  );
});

describe('writers of lines, payers, cancellers and the automation at once', () => {
  test.each(isolationLevels)(
    'under %s, lines added, changed and removed while buyers pay, apps cancel and the automation cancels and confirms (its runs under the same level): money and stock are conserved, and a loser meets only 40001, OA001 or OA004',
    async (level) => {
      tally.isolationLevels.push(level);
      const prefix = `race_${short(level)}_`;
      const unpaid = 300;
      const shipped = 60;
      const before = await conserved(db.pool);
      // Deadlines a day from now, one millisecond apart: the runners sweep them with a moving as_of.
      const ids = await bulkOrders(db.pool, { ...shop, prefix, count: unpaid, due: false, lines: 2 });
      const shippedIds = await bulkOrders(db.pool, {
        ...shop,
        prefix: `${prefix}s`,
        count: shipped,
        due: false,
        state: 'shipped',
      });
      const durationMs = 3000;
      const started = Date.now();
      const running = () => Date.now() - started < durationMs;
      const pick = <T>(list: T[]) => list[Math.floor(Math.random() * list.length)]!;
      // Buyers pay the orders from the newest down; writers of lines and the app's canceller work
      // just ahead of them, on the orders about to be paid; the automation sweeps from the oldest up.
      let next = unpaid - 1;
      const nearNext = () => ids[Math.max(0, next - Math.floor(Math.random() * 4))]!;
      const unexpected: string[] = [];
      const seen: Record<string, number> = {};
      const counts = { lineChanges: 0, payments: 0, cancels: 0, autoCancelled: 0, autoConfirmed: 0, confirms: 0 };
      /** Runs one attempt; the refusals a loser may meet are counted, anything else is unexpected. */
      const attempt = async (what: string, work: () => Promise<void>, allowed: string[]): Promise<boolean> => {
        try {
          await work();
          return true;
        } catch (error) {
          const code = sqlstateOf(error) ?? 'none';
          seen[code] = (seen[code] ?? 0) + 1;
          if (!allowed.includes(code)) unexpected.push(`${what}: ${code} ${(error as Error).message}`);
          return false;
        }
      };
      const once = async (client: pg.ClientBase, statements: [string, unknown[]][], at = level) => {
        await client.query(`begin isolation level ${at}`);
        try {
          for (const [text, values] of statements) await client.query(text, values);
          await client.query('commit');
        } catch (error) {
          await client.query('rollback');
          throw error;
        }
      };

      // One writer of lines at READ COMMITTED whatever the level: apps of one shop need not agree on it.
      const roles = ['lines', 'lines', 'lines', 'pay', 'pay', 'pay', 'cancel', 'confirm', 'autoCancel', 'autoConfirm'];
      await parallel(db.url, roles.length, tally, async (client, i) => {
        const role = roles[i]!;
        if (role === 'autoCancel' || role === 'autoConfirm') {
          // The procedures commit after each batch: their transactions take the session's default level.
          await client.query(`set default_transaction_isolation = '${level}'`);
          const procedure = role === 'autoCancel' ? 'cancel_expired_orders' : 'confirm_shipped_orders';
          const column = role === 'autoCancel' ? 'cancelled' : 'confirmed';
          while (running()) {
            const sweep = Math.floor(
              ((Date.now() - started) / durationMs) * (role === 'autoCancel' ? unpaid : shipped),
            );
            await attempt(procedure, async () => {
              const { rows } = await client.query<Record<string, string>>(
                `call order_automation.${procedure}(as_of => now() + interval '1 day' + interval '${sweep} milliseconds', batch_size => 7)`,
              );
              counts[role === 'autoCancel' ? 'autoCancelled' : 'autoConfirmed'] += Number(rows[0]![column]);
            }, ['40001']);
            await sleep(5);
          }
          return;
        }
        while (running()) {
          if (role === 'lines') {
            const id = nearNext();
            const book = `book${1 + Math.floor(Math.random() * shop.books)}`;
            const kind = Math.floor(Math.random() * 3);
            const statement: [string, unknown[]] =
              kind === 0
                ? [
                    `insert into new_order_detail (order_id, book_id, count, price) values ($1, $2, 1 + floor(random() * 5)::integer, 1000)
                     on conflict (order_id, book_id) do update set count = new_order_detail.count + excluded.count`,
                    [id, book],
                  ]
                : kind === 1
                  ? ['update new_order_detail set count = count + 1 where order_id = $1 and book_id = $2', [id, book]]
                  : ['delete from new_order_detail where order_id = $1 and book_id = $2', [id, book]];
            if (
              await attempt('change a line', () => once(client, [statement], i === 0 ? 'read committed' : level), [
                '40001',
                'OA004',
              ])
            )
              counts.lineChanges++;
          } else if (role === 'pay' || role === 'cancel') {
            // The app reads the order's total, then changes its state, in one transaction.
            const id = role === 'pay' ? ids[Math.max(0, next--)]! : nearNext();
            const ok = await attempt(role, async () => {
              await client.query(`begin isolation level ${level}`);
              try {
                await client.query('select sum(count::bigint * price) from new_order_detail where order_id = $1', [id]);
                await sleep(3);
                await client.query(`update new_order set state = ${role === 'pay' ? 1 : 4} where order_id = $1`, [id]);
                await client.query('commit');
              } catch (error) {
                await client.query('rollback');
                throw error;
              }
            }, ['40001', 'OA001']);
            if (ok) counts[role === 'pay' ? 'payments' : 'cancels']++;
          } else {
            const id = pick(shippedIds);
            if (
              await attempt(
                'confirm receipt',
                () => once(client, [['update new_order set state = 3 where order_id = $1', [id]]]),
                ['40001', 'OA001'],
              )
            )
              counts.confirms++;
          }
        }
      });
      tally.ordersRaced += unpaid + shipped;

      tally.expectNone('a loser meets only 40001, OA001 or OA004', unexpected.length, unexpected.slice(0, 5));
      // The race happened: every kind of writer got through, and the automation took orders.
      expect(counts.lineChanges).toBeGreaterThan(0);
      expect(counts.payments).toBeGreaterThan(0);
      expect(counts.autoCancelled + counts.cancels).toBeGreaterThan(0);
      expect(counts.autoConfirmed + counts.confirms).toBeGreaterThan(0);
      if (level === 'read committed') expect(seen['40001'] ?? 0).toBe(0);
      await expectInvariants(db.pool, tally);
      await expectConserved(db.pool, before, tally);

      // Refunding every paid order and confirming every shipped one moves money only between balances.
      await db.pool.query(`update new_order set state = 4 where starts_with(order_id, $1) and state in (0, 1)`, [
        prefix,
      ]);
      await db.pool.query(`update new_order set state = 3 where starts_with(order_id, $1) and state = 2`, [prefix]);
      await expectConserved(db.pool, before, tally);
    },
    60_000,
  );
});

/** Statements that change an order and its lines at once ($1: the order). */
const together = {
  'delete the order and its lines (lines first in the WITH)':
    'with d as (delete from new_order_detail where order_id = $1 returning 1) delete from new_order where order_id = $1',
  'delete the lines, then the orders they were of':
    'with d as (delete from new_order_detail where order_id = $1 returning order_id) delete from new_order where order_id in (select order_id from d)',
  'delete the order, then its lines':
    'with o as (delete from new_order where order_id = $1 returning order_id) delete from new_order_detail where order_id in (select order_id from o)',
  'cancel the order and delete its lines':
    'with d as (delete from new_order_detail where order_id = $1 returning 1) update new_order set state = 4 where order_id = $1',
  'delete the lines, then cancel the orders they were of':
    'with d as (delete from new_order_detail where order_id = $1 returning order_id) update new_order set state = 4 where order_id in (select order_id from d)',
  'cancel the order, then delete its lines':
    'with o as (update new_order set state = 4 where order_id = $1 returning order_id) delete from new_order_detail where order_id in (select order_id from o)',
} as const;

/** Placing an order with its lines (10 of book1, 7 of book2) in one statement ($1 order, $2 buyer, $3 store). */
const placedTogether = {
  'the order, then its lines': `with o as (insert into new_order (order_id, user_id, store_id) values ($1, $2, $3) returning order_id)
     insert into new_order_detail (order_id, book_id, count, price)
     select o.order_id, v.book_id, v.count, 100 from o, (values ('book1', 10), ('book2', 7)) v(book_id, count)`,
  'the lines, then their order': `with d as (insert into new_order_detail (order_id, book_id, count, price) values ($1, 'book1', 10, 100), ($1, 'book2', 7, 100) returning order_id)
     insert into new_order (order_id, user_id, store_id) select distinct d.order_id, $2, $3 from d`,
} as const;

describe('one statement that changes orders and their lines together', () => {
  test.each(isolationLevels)(
    'under %s, from four connections at once: deleting or cancelling unpaid orders in the statement that deletes their lines returns every book, and placing one with its lines in one statement reserves them once',
    async (level) => {
      tally.isolationLevels.push(level);
      const before = await conserved(db.pool);
      const connections = 4;
      const rounds = 4;
      const retries = { count: 0 };
      const wrong: unknown[] = [];
      await parallel(db.url, connections, tally, async (client, c) => {
        // All on store1's shelves of book1 and book2: the connections contend for the same rows.
        const place = (id: string): [string, unknown[]][] => [
          [`insert into new_order (order_id, user_id, store_id) values ($1, $2, 'store1')`, [id, `buyer${1 + c}`]],
          [
            `insert into new_order_detail (order_id, book_id, count, price) values ($1, 'book1', 10, 100), ($1, 'book2', 7, 100)`,
            [id],
          ],
        ];
        for (let round = 0; round < rounds; round++) {
          const base = `one_${short(level)}_${c}_${round}_`;
          // Each statement after the orders it removes were placed, several in one transaction: what
          // one statement writes down for the next must not leak into it.
          const removed = Object.values(together).map((_, k) => `${base}r${k}`);
          await inTransaction(client, level, removed.flatMap(place), retries);
          await inTransaction(
            client,
            level,
            Object.values(together).map((text, k) => [text, [removed[k]]]),
            retries,
          );
          const placed = Object.values(placedTogether).map((_, k) => `${base}p${k}`);
          await inTransaction(
            client,
            level,
            Object.values(placedTogether).map((text, k) => [text, [placed[k], `buyer${1 + c}`, 'store1']]),
            retries,
          );
          const { rows } = await client.query<{ order_id: string; state: number; lines: string }>(
            `select o.order_id, o.state, (select count(*) from new_order_detail d where d.order_id = o.order_id) lines
               from new_order o where starts_with(o.order_id, $1) order by 1`,
            [base],
          );
          const state = Object.fromEntries(rows.map((r) => [r.order_id, `${r.state}/${r.lines}`]));
          const expected = {
            ...Object.fromEntries(
              Object.keys(together)
                .map((name, k) => [removed[k]!, name.includes('cancel') ? '4/0' : undefined] as const)
                .filter(([, v]) => v !== undefined),
            ),
            ...Object.fromEntries(placed.map((id) => [id, '0/2'])),
          };
          const sorted = (o: Record<string, string | undefined>) => JSON.stringify(Object.entries(o).sort());
          if (sorted(state) !== sorted(expected)) wrong.push({ state, expected });
        }
      });
      tally.ordersRaced += connections * rounds * (Object.keys(together).length + Object.keys(placedTogether).length);
      await expectConserved(db.pool, before, tally);
      tally.expectNone('each statement leaves its orders and lines as written', wrong.length, wrong.slice(0, 3));
      await expectInvariants(db.pool, tally);
    },
    60_000,
  );

  test.each(isolationLevels)(
    'under %s, cancelling a paid order in the statement that deletes its lines is refused (OA004) whichever trigger runs first, and changes nothing',
    async (level) => {
      tally.isolationLevels.push(level);
      const before = await conserved(db.pool);
      const wrong: unknown[] = [];
      await parallel(db.url, 1, tally, async (client) => {
        for (const [k, text] of [
          together['cancel the order and delete its lines'],
          together['delete the lines, then cancel the orders they were of'],
          together['cancel the order, then delete its lines'],
        ].entries()) {
          // Refunded after its lines are gone, the order would give back less than it was paid.
          const paid = `paid_${short(level)}_${k}`;
          await inTransaction(client, level, [
            [`insert into new_order (order_id, user_id, store_id) values ($1, 'buyer2', 'store2')`, [paid]],
            [
              `insert into new_order_detail (order_id, book_id, count, price) values ($1, 'book1', 10, 100), ($1, 'book2', 7, 100)`,
              [paid],
            ],
            ['update new_order set state = 1 where order_id = $1', [paid]],
          ]);
          const code = await inTransaction(client, level, [[text, [paid]]]).then(
            () => 'none',
            (error: unknown) => sqlstateOf(error),
          );
          const { rows } = await client.query<{ state: number; lines: string }>(
            `select o.state, (select count(*) from new_order_detail d where d.order_id = o.order_id) lines
               from new_order o where o.order_id = $1`,
            [paid],
          );
          if (code !== 'OA004' || rows[0]?.state !== 1 || rows[0].lines !== '2') wrong.push({ text, code, rows });
        }
      });
      tally.ordersRaced += 3;
      await expectConserved(db.pool, before, tally);
      tally.expectNone(
        'the statement is refused with OA004 and the order stays paid with its lines',
        wrong.length,
        wrong,
      );
    },
    60_000,
  );

  test.each(isolationLevels)(
    "under %s, an app's foreign key ON DELETE CASCADE: deleting unpaid orders returns the books of the lines the cascade deletes",
    async (level) => {
      tally.isolationLevels.push(level);
      // An adopted app's own key may cascade; a database of its own, so the other tests keep theirs.
      const cascading = await reliabilityDatabase();
      try {
        await seedBookstore(cascading.pool, { ...shop, balance: 1_000_000, stock: 1_000 });
        await cascading.pool.query(`
          alter table new_order_detail drop constraint new_order_detail_order_id_fkey,
            add foreign key (order_id) references new_order on delete cascade`);
        const before = await conserved(cascading.pool);
        const ids = ['a', 'b', 'c'].map((k) => `cascade_${short(level)}_${k}`);
        await parallel(cascading.url, 1, tally, async (client) => {
          for (const id of ids) {
            await client.query(`insert into new_order (order_id, user_id, store_id) values ($1, 'buyer1', 'store1')`, [
              id,
            ]);
            await client.query(
              `insert into new_order_detail (order_id, book_id, count, price) values ($1, 'book1', 10, 100), ($1, 'book2', 7, 100)`,
              [id],
            );
          }
          await inTransaction(client, level, [
            ['delete from new_order where order_id = $1', [ids[0]]],
            ['delete from new_order where order_id = any ($1)', [ids.slice(1)]],
          ]);
        });
        tally.ordersRaced += ids.length;
        const { rows } = await cascading.pool.query<{ n: number }>('select count(*)::int as n from new_order_detail');
        expect(rows[0]!.n).toBe(0);
        await expectConserved(cascading.pool, before, tally);
      } finally {
        await cascading.drop();
      }
    },
    60_000,
  );
});
