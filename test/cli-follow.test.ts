// Command-line details of the event feed and the jobs: `events --follow --limit n` stops after n
// events; `run purge-history` refuses the options it would otherwise ignore.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { placeOrder } from '../src/index.js';
import { cliInProcess } from './cli-in-process.js';
import { createTestDatabase, seedBookstore, type TestDatabase } from './helpers.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
  await seedBookstore(db.pool);
  for (const orderId of ['f1', 'f2', 'f3']) {
    await placeOrder(db.pool, {
      orderId,
      userId: 'buyer1',
      storeId: 'store1',
      items: [{ bookId: 'book1', count: 1, price: 100 }],
    });
  }
});
afterAll(async () => db?.drop());

test('events --follow --limit 2 prints the first two events after --after and stops by itself', async () => {
  const { code, stdout, stderr } = await cliInProcess(['events', '--follow', '--after', '0', '--limit', '2'], db.url);
  expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
  const lines = stdout.split('\n').filter((line) => line !== '');
  expect(lines).toHaveLength(2);
  expect(lines[0]).toMatch(/ f1 +placed -> unpaid +place_order/);
  expect(lines[1]).toMatch(/ f2 +placed -> unpaid +place_order/);
});

test('events --follow --limit 0 prints nothing and stops', async () => {
  expect(await cliInProcess(['events', '--follow', '--limit', '0'], db.url)).toEqual({
    code: 0,
    stdout: '',
    stderr: '',
  });
});

test('run purge-history refuses --as-of and --batch-size instead of ignoring them, and purges nothing', async () => {
  const before = await db.pool.query('select count(*)::int as n from order_automation.run');
  for (const extra of [
    ['--as-of', '2030-01-01T00:00:00Z'],
    ['--batch-size', '10'],
  ]) {
    const { code, stdout, stderr } = await cliInProcess(['run', 'purge-history', ...extra], db.url);
    expect({ code, stdout }).toEqual({ code: 2, stdout: '' });
    expect(stderr).toMatch(/^order-automation: run purge-history takes neither --as-of nor --batch-size/);
  }
  expect((await db.pool.query('select count(*)::int as n from order_automation.run')).rows).toEqual(before.rows);
});
