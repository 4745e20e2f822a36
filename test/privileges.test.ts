// Least privilege: an app role runs the lifecycle but cannot change settings, write the order history
// or run the automation; an admin role can; nothing of the package is executable by PUBLIC.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  cancelExpiredOrders,
  cancelOrder,
  confirmReceipt,
  payOrder,
  placeOrder,
  shipOrder,
  updateSettings,
} from '../src/index.js';
import { admin as asSuperuser, createTestDatabase, seedBookstore, type TestDatabase } from './helpers.js';
import { newClient } from './setup/connections.js';

let db: TestDatabase;
const suffix = randomBytes(4).toString('hex');
const app = `app_${suffix}`;
const admin = `admin_${suffix}`;
const nobody = `nobody_${suffix}`;
const as = (role: string) => {
  const url = new URL(db.url);
  url.username = role;
  return url.toString();
};

beforeAll(async () => {
  db = await createTestDatabase();
  await seedBookstore(db.pool);
  await db.pool.query(`create role ${app} login in role order_automation_app;
                       create role ${admin} login in role order_automation_admin;
                       create role ${nobody} login`);
});
afterAll(async () => {
  await db?.drop();
  await asSuperuser((server) =>
    server.query(`drop role if exists ${app}; drop role if exists ${admin}; drop role if exists ${nobody}`),
  );
});

const items = [{ bookId: 'book1', count: 1, price: 10 }];

describe('roles', () => {
  test('the app role places, pays, ships, receives and cancels orders through the lifecycle', async () => {
    const url = as(app);
    await placeOrder(url, { orderId: 'p1', userId: 'buyer1', storeId: 'store1', items });
    await payOrder(url, 'p1');
    await shipOrder(url, 'p1');
    await confirmReceipt(url, 'p1');
    await placeOrder(url, { orderId: 'p2', userId: 'buyer1', storeId: 'store1', items });
    await cancelOrder(url, 'p2');
    // A plain UPDATE by the app does its bookkeeping too (the triggers run as the package's owner).
    await placeOrder(url, { orderId: 'p3', userId: 'buyer1', storeId: 'store1', items });
    const client = newClient({ connectionString: url });
    await client.connect();
    try {
      await client.query(`update new_order set state = 1 where order_id = 'p3'`);
      const events = await client.query(
        `select count(*)::int n from order_automation.order_event where order_id in ('p1', 'p2', 'p3')`,
      );
      expect(events.rows[0].n).toBe(8);
    } finally {
      await client.end();
    }
  });

  test('the app role cannot change settings, write or erase the order history, or run the automation', async () => {
    const client = newClient({ connectionString: as(app) });
    await client.connect();
    try {
      for (const statement of [
        `update order_automation.settings set batch_size = 1`,
        `insert into order_automation.order_event (order_id, from_state, to_state, cause) values ('x', 0, 4, 'payment_timeout')`,
        `delete from order_automation.order_event`,
        `call order_automation.cancel_expired_orders()`,
        `select order_automation.set_schedule('cancel_expired_orders', '* * * * *')`,
        `select order_automation.move_stock(array['store1'], array['book1'], array[1000], array['x'])`,
      ]) {
        await expect(client.query(statement), statement).rejects.toThrow(/permission denied/);
      }
    } finally {
      await client.end();
    }
    await expect(updateSettings(as(app), { batchSize: 5 })).rejects.toThrow(/permission denied/);
  });

  test('the admin role changes settings and runs the automation', async () => {
    await updateSettings(as(admin), { batchSize: 500 });
    await expect(cancelExpiredOrders(as(admin))).resolves.toEqual({ cancelled: 0 });
    await updateSettings(as(admin), { batchSize: 500 });
  });

  test("a role without the package's roles can run none of its routines", async () => {
    const client = newClient({ connectionString: as(nobody) });
    await client.connect();
    try {
      await expect(client.query(`select order_automation.pay_order('p1')`)).rejects.toThrow(/permission denied/);
      const { rows } = await db.pool
        .query(`select count(*)::int n from pg_proc p where p.pronamespace = 'order_automation'::regnamespace
        and has_function_privilege('public', p.oid, 'execute')`);
      expect(rows[0].n).toBe(0);
    } finally {
      await client.end();
    }
  });
});
