// Typed lifecycle actions, so an app never writes raw state numbers. Each is one call of the SQL
// function of the same name; the database enforces every rule.
import { type Db, query } from './db.js';
import { type Order, type OrderRow, orderStates, toOrder } from './types.js';

/** An order row of a package function, with its state named by the codes in settings. */
function named(call: string): string {
  // Schema-qualified operator: the caller's search_path may hold another role's "=".
  const name = `case ${orderStates.map((state) => `when o.state operator(pg_catalog.=) s.state_${state} then '${state}'`).join(' ')} end`;
  return `select o.*, ${name} as state_name from ${call} o, order_automation.settings s`;
}

export interface OrderLine {
  bookId: string;
  count: number;
  price: number | bigint;
}

export interface PlaceOrder {
  orderId: string;
  userId: string;
  storeId: string;
  items: OrderLine[];
}

/** Places an unpaid order and reserves its books (InsufficientStockError when the store is short). */
export async function placeOrder(db: Db, order: PlaceOrder): Promise<Order> {
  const items = order.items.map((i) => ({ book_id: i.bookId, count: i.count, price: String(i.price) }));
  const rows = await query<OrderRow>(
    db,
    named('order_automation.place_order($1::text, $2::text, $3::text, $4::jsonb)'),
    [order.orderId, order.userId, order.storeId, JSON.stringify(items)],
  );
  return toOrder(rows[0]!);
}

async function act(
  db: Db,
  fn: 'pay_order' | 'ship_order' | 'confirm_receipt' | 'cancel_order',
  orderId: string,
): Promise<Order> {
  // fn is one of four fixed names, never user input.
  const rows = await query<OrderRow>(db, named(`order_automation.${fn}($1::text)`), [orderId]);
  return toOrder(rows[0]!);
}

/** Pays an unpaid order from the buyer's balance (InsufficientBalanceError when short). */
export const payOrder = (db: Db, orderId: string): Promise<Order> => act(db, 'pay_order', orderId);
/** Ships a paid order: its receipt deadline starts. */
export const shipOrder = (db: Db, orderId: string): Promise<Order> => act(db, 'ship_order', orderId);
/** The buyer confirms receipt of a shipped order: the seller is paid. */
export const confirmReceipt = (db: Db, orderId: string): Promise<Order> => act(db, 'confirm_receipt', orderId);
/** Cancels an unpaid or paid order: books back on the shelf, payment refunded. */
export const cancelOrder = (db: Db, orderId: string): Promise<Order> => act(db, 'cancel_order', orderId);

async function one(db: Db, text: string, values: unknown[]): Promise<Order> {
  return toOrder((await query<OrderRow>(db, text, values))[0]!);
}

/** A payment attempt begins: the order is not auto-cancelled before now + grace (default: the payment_grace setting). */
export const paymentStarted = (db: Db, orderId: string, grace?: string): Promise<Order> =>
  one(db, named('order_automation.payment_started($1::text, $2::interval)'), [orderId, grace ?? null]);
/** The buyer pushes the receipt deadline once (default: the receipt_extension setting); ReceiptAlreadyExtendedError the second time. */
export const extendReceipt = (db: Db, orderId: string, by?: string): Promise<Order> =>
  one(db, named('order_automation.extend_receipt($1::text, $2::interval)'), [orderId, by ?? null]);
/** Holds an order: neither auto-cancelled nor auto-confirmed until released; its countdown pauses. */
export const holdOrder = (db: Db, orderId: string, reason: string): Promise<Order> =>
  one(db, named('order_automation.hold($1::text, $2::text)'), [orderId, reason]);
/** Releases a held order: its countdown resumes with the time that was left. */
export const releaseOrder = (db: Db, orderId: string): Promise<Order> =>
  one(db, named('order_automation.release($1::text)'), [orderId]);
