// Reminders are a side step of a run: best effort. An order another session holds is skipped (and
// reminded later), an order whose reminder fails is skipped and recorded, a run takes a bounded
// number of them, and nothing about them ever stops the run from processing the due orders.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { cancelExpiredOrders, confirmShippedOrders } from '../src/index.js';
import { admin as asSuperuser, createTestDatabase, seedBookstore, type TestDatabase } from './helpers.js';

let db: TestDatabase;
beforeEach(async () => {
  db = await createTestDatabase();
  await seedBookstore(db.pool);
  await db.pool.query(`update order_automation.settings set remind_before = interval '1 hour'`);
});
afterEach(async () => db?.drop());

/** Places unpaid orders whose pay deadline is `offset` from now. */
async function unpaid(ids: string[], offset: string): Promise<void> {
  for (const id of ids) {
    await db.pool.query(
      `select order_automation.place_order($1, 'buyer1', 'store1', '[{"book_id": "book1", "count": 1, "price": 10}]')`,
      [id],
    );
    await db.pool.query(`update new_order set pay_deadline = now() + $2::interval where order_id = $1`, [id, offset]);
  }
}

async function reminded(): Promise<string[]> {
  const { rows } = await db.pool.query<{ order_id: string }>(
    `select order_id from order_automation.order_event where cause = 'payment_due_soon' order by order_id`,
  );
  return rows.map((r) => r.order_id);
}

const cancelledCount = async (ids: string[]) =>
  Number(
    (await db.pool.query(`select count(*) n from new_order where order_id = any ($1) and state = 4`, [ids])).rows[0].n,
  );

describe('reminders never stop a run', () => {
  test('a not-yet-due order locked by another session is skipped, not waited for: the due orders are cancelled at once, and it is reminded by a later run', async () => {
    await unpaid(['due1', 'due2', 'due3'], '-1 minute');
    await unpaid(['soon'], '10 minutes');
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query(`select 1 from new_order where order_id = 'soon' for update`);
      const started = Date.now();
      expect(await cancelExpiredOrders(db.pool)).toEqual({ cancelled: 3 });
      expect(Date.now() - started).toBeLessThan(4000); // no lock_timeout (5 s) spent waiting
      expect(await reminded()).toEqual([]);
      await holder.query('rollback');
    } finally {
      await holder.end();
    }
    await cancelExpiredOrders(db.pool);
    expect(await reminded()).toEqual(['soon']);
    expect(await cancelledCount(['due1', 'due2', 'due3'])).toBe(3);
  });

  test('an app trigger raising for one reminded order: the others are reminded, the due orders cancelled, the failure recorded under the run', async () => {
    await db.pool.query(`
      create function public.refuse_bad_reminder() returns trigger language plpgsql as $$
      begin
        raise exception 'the app refuses to touch %', new.order_id;
      end $$;
      create trigger app_refuses before update on public.new_order for each row
        when (new.order_id = 'bad' and new.reminded_state is distinct from old.reminded_state)
        execute function public.refuse_bad_reminder();`);
    await unpaid(['due1', 'due2'], '-1 minute');
    await unpaid(['bad', 'good'], '10 minutes');
    expect(await cancelExpiredOrders(db.pool)).toEqual({ cancelled: 2 });
    expect(await reminded()).toEqual(['good']);
    const failures = await db.pool.query(
      `select f.order_id, f.step, f.message, r.error from order_automation.order_failure f
         join order_automation.run r on r.id = f.run_id`,
    );
    expect(failures.rows).toEqual([
      { order_id: 'bad', step: 'remind_due_soon', message: 'the app refuses to touch bad', error: null },
    ]);
  });

  test('a remind_before so far ahead that the reminder window overflows never stops the run', async () => {
    // remind_before is bounded (365 days), so the window overflows only for a run as_of near the end
    // of time: due1 is due then, far's deadline lies between as_of and the end of time.
    await db.pool.query(`update order_automation.settings set remind_before = interval '365 days'`);
    await unpaid(['due1'], '-1 minute');
    await unpaid(['far'], '292250 years');
    const { rows } = await db.pool.query<{ cancelled: string }>(
      `call order_automation.cancel_expired_orders(as_of => '294276-06-01 00:00:00+00')`,
    );
    expect(rows).toEqual([{ cancelled: '1' }]);
    expect(await reminded()).toEqual(['far']);
  });

  test('a run writes at most batch_size reminders, nearest deadline first; the next run takes the rest', async () => {
    await unpaid(['r5', 'r4', 'r3', 'r2', 'r1'], '10 minutes');
    for (const [i, id] of ['r1', 'r2', 'r3', 'r4', 'r5'].entries()) {
      await db.pool.query(`update new_order set pay_deadline = now() + $2::interval where order_id = $1`, [
        id,
        `${10 + i} minutes`,
      ]);
    }
    await cancelExpiredOrders(db.pool, { batchSize: 2 });
    expect(await reminded()).toEqual(['r1', 'r2']);
    await cancelExpiredOrders(db.pool, { batchSize: 2 });
    expect(await reminded()).toEqual(['r1', 'r2', 'r3', 'r4']);
  });
});

describe('the admin role runs the automation with reminders on', () => {
  const adminLogin = `admin_${randomBytes(4).toString('hex')}`;
  test('cancel and confirm, as a login granted order_automation_admin, write their reminders and process what is due', async () => {
    await asSuperuser((c) => c.query(`create role ${adminLogin} login in role order_automation_admin`));
    try {
      await unpaid(['due1'], '-1 minute');
      await unpaid(['soon'], '10 minutes');
      await db.pool.query(
        `select order_automation.place_order('sent', 'buyer2', 'store1', '[{"book_id": "book2", "count": 1, "price": 10}]')`,
      );
      await db.pool.query(`select order_automation.pay_order('sent'), order_automation.ship_order('sent')`);
      await db.pool.query(
        `update new_order set receipt_deadline = now() + interval '5 minutes' where order_id = 'sent'`,
      );
      const url = new URL(db.url);
      url.username = adminLogin;
      expect(await cancelExpiredOrders(url.toString())).toEqual({ cancelled: 1 });
      expect(await confirmShippedOrders(url.toString())).toEqual({ confirmed: 0 });
      const causes = await db.pool.query(
        `select order_id, cause from order_automation.order_event where cause like '%_due_soon' or cause = 'payment_timeout' order by order_id`,
      );
      expect(causes.rows).toEqual([
        { order_id: 'due1', cause: 'payment_timeout' },
        { order_id: 'sent', cause: 'receipt_due_soon' },
        { order_id: 'soon', cause: 'payment_due_soon' },
      ]);
    } finally {
      await asSuperuser((c) => c.query(`drop role if exists ${adminLogin}`));
    }
  });
});
