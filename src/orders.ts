// Typed lifecycle actions, so an app never writes raw state numbers. Each is one call of the SQL
// function of the same name; the database enforces every rule, and what it refuses comes back as a
// typed error naming the order and the argument (see order-errors.ts).
import { type Db, query } from './db.js';
import { OrderNotFoundError } from './errors.js';
import { type OrderContext, orderError } from './order-errors.js';
import { type Order, type OrderRow, orderStates, toOrder } from './types.js';

/** The name of `o.state` by the codes in settings `s` (an adopted app may use other codes than 0-4). */
// Schema-qualified operator: the caller's search_path may hold another role's "=".
const stateNameOf = `case ${orderStates.map((state) => `when o.state operator(pg_catalog.=) s.state_${state} then '${state}'`).join(' ')} end`;

/** An order row of a package function, with its state named by the codes in settings. */
function named(call: string): string {
  return `select o.*, ${stateNameOf} as state_name from ${call} o, order_automation.settings s`;
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

/** An order with its lines and total, as getOrder reads it. */
export interface OrderDetails extends Order {
  lines: { bookId: string; count: number; price: number }[];
  /** sum(count * price) of the lines, in the smallest currency unit. */
  total: number;
}

/** Runs one call about the order in `context`, its refusals mapped to typed errors. */
async function about<T>(context: OrderContext, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw orderError(error, context);
  }
}

/**
 * Places an unpaid order and reserves its books. InsufficientStockError when the store is short,
 * OrderExistsError when the id is taken, InvalidArgumentError for an unknown buyer or store or a bad line.
 */
export async function placeOrder(db: Db, order: PlaceOrder): Promise<Order> {
  const items = order.items.map((i) => ({ book_id: i.bookId, count: i.count, price: String(i.price) }));
  const rows = await about({ orderId: order.orderId, items: order.items }, () =>
    query<OrderRow>(db, named('order_automation.place_order($1::text, $2::text, $3::text, $4::jsonb)'), [
      order.orderId,
      order.userId,
      order.storeId,
      JSON.stringify(items),
    ]),
  );
  return toOrder(rows[0]!);
}

async function act(
  db: Db,
  fn: 'pay_order' | 'ship_order' | 'confirm_receipt' | 'cancel_order',
  orderId: string,
): Promise<Order> {
  // fn is one of four fixed names, never user input.
  const rows = await about({ orderId }, () =>
    query<OrderRow>(db, named(`order_automation.${fn}($1::text)`), [orderId]),
  );
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

async function one(db: Db, context: OrderContext, text: string, values: unknown[]): Promise<Order> {
  return toOrder((await about(context, () => query<OrderRow>(db, text, values)))[0]!);
}

/** A payment attempt begins: the order is not auto-cancelled before now + grace (default: the payment_grace setting). */
export const paymentStarted = (db: Db, orderId: string, grace?: string): Promise<Order> =>
  one(
    db,
    { orderId, interval: { name: 'grace', value: grace } },
    named('order_automation.payment_started($1::text, $2::interval)'),
    [orderId, grace ?? null],
  );
/** The buyer pushes the receipt deadline once (default: the receipt_extension setting); ReceiptAlreadyExtendedError the second time. */
export const extendReceipt = (db: Db, orderId: string, by?: string): Promise<Order> =>
  one(
    db,
    { orderId, interval: { name: 'by', value: by } },
    named('order_automation.extend_receipt($1::text, $2::interval)'),
    [orderId, by ?? null],
  );
/** Holds an order: neither auto-cancelled nor auto-confirmed until released; its countdown pauses. */
export const holdOrder = (db: Db, orderId: string, reason: string): Promise<Order> =>
  one(db, { orderId }, named('order_automation.hold($1::text, $2::text)'), [orderId, reason]);
/** Releases a held order: its countdown resumes with the time that was left. */
export const releaseOrder = (db: Db, orderId: string): Promise<Order> =>
  one(db, { orderId }, named('order_automation.release($1::text)'), [orderId]);

/** One order as it stands: state (by name), deadlines, hold, lines and total. OrderNotFoundError when there is none. */
export async function getOrder(db: Db, orderId: string): Promise<OrderDetails> {
  const rows = await query<OrderRow & { lines: { book_id: string; count: number; price: string }[]; total: string }>(
    db,
    // Lines by a lateral aggregate, not GROUP BY: an adopted app's new_order may have no primary key.
    // Qualified: a role that may create functions or operators in public must not run code as the caller.
    `
    select o.*, ${stateNameOf} as state_name, l.lines, l.total
      from public.new_order o
     cross join order_automation.settings s
     cross join lateral (
       select coalesce(pg_catalog.json_agg(pg_catalog.json_build_object('book_id', d.book_id, 'count', d.count,
                                                                        'price', d.price::pg_catalog.text)
                                           order by d.book_id), '[]'::pg_catalog.json) as lines,
              coalesce(pg_catalog.sum(d.count::pg_catalog.int8 operator(pg_catalog.*) d.price), 0)::pg_catalog.text as total
         from public.new_order_detail d
        where d.order_id operator(pg_catalog.=) o.order_id) l
     where o.order_id operator(pg_catalog.=) $1::pg_catalog.text`,
    [orderId],
  );
  const row = rows[0];
  if (!row) throw new OrderNotFoundError(`order ${orderId} does not exist`, { sqlstate: 'OA005' });
  return {
    ...toOrder(row),
    lines: row.lines.map((l) => ({ bookId: l.book_id, count: l.count, price: Number(l.price) })),
    total: Number(row.total),
  };
}
