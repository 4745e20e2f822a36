// The shapes the module returns: camelCase views of the package's rows.

/** The states of new_order, by name, in the order of their default codes 0..4. */
export const orderStates = ['unpaid', 'paid', 'shipped', 'received', 'cancelled'] as const;
export type OrderState = (typeof orderStates)[number];

/** The codes new_order.state uses (settings state_unpaid ... state_cancelled); getSettings() returns them. */
export interface StateCodes {
  stateUnpaid: number;
  statePaid: number;
  stateShipped: number;
  stateReceived: number;
  stateCancelled: number;
}

/** @internal The settings key of a state's code: 'cancelled' -> 'stateCancelled'. */
export const stateCodeKey = (state: OrderState) =>
  `state${state[0]!.toUpperCase()}${state.slice(1)}` as keyof StateCodes;

/**
 * The name of a state code: by the default codes 0..4, or by `codes` (an adopted app's, e.g. -1 for
 * cancelled: pass getSettings(db)); null for a code that is none of them.
 */
export function stateName(code: number | null, codes?: StateCodes): OrderState | null {
  if (code === null) return null;
  if (codes === undefined) return orderStates[code] ?? null;
  return orderStates.find((state) => codes[stateCodeKey(state)] === code) ?? null;
}

export interface Order {
  orderId: string;
  userId: string;
  storeId: string;
  state: OrderState;
  createdAt: Date;
  paidAt: Date | null;
  shippedAt: Date | null;
  receivedAt: Date | null;
  cancelledAt: Date | null;
  payDeadline: Date | null;
  receiptDeadline: Date | null;
  /** Set while the order is held (hold / release). */
  heldAt: Date | null;
  holdReason: string | null;
  /** When the buyer extended the receipt deadline (once per order). */
  receiptExtendedAt: Date | null;
}

export interface OrderRow {
  order_id: string;
  user_id: string;
  store_id: string;
  state: number;
  created_at: Date;
  paid_at: Date | null;
  shipped_at: Date | null;
  received_at: Date | null;
  cancelled_at: Date | null;
  pay_deadline: Date | null;
  receipt_deadline: Date | null;
  held_at: Date | null;
  hold_reason: string | null;
  receipt_extended_at: Date | null;
  /** Added by the adopt change: the state's name for the codes in settings (see orders.ts). */
  state_name?: OrderState | null;
}

export function toOrder(row: OrderRow): Order {
  return {
    orderId: row.order_id,
    userId: row.user_id,
    storeId: row.store_id,
    state: row.state_name !== undefined ? row.state_name! : stateName(row.state)!,
    createdAt: row.created_at,
    paidAt: row.paid_at,
    shippedAt: row.shipped_at,
    receivedAt: row.received_at,
    cancelledAt: row.cancelled_at,
    payDeadline: row.pay_deadline,
    receiptDeadline: row.receipt_deadline,
    heldAt: row.held_at ?? null,
    holdReason: row.hold_reason ?? null,
    receiptExtendedAt: row.receipt_extended_at ?? null,
  };
}

/**
 * The package's jobs, one entry per row of the order_automation.job table (a test holds the two equal).
 * `alias`: the short name the command line takes (run cancel, schedule pause cancel).
 * `dueOrders`: run by run_due_orders in batches of due orders (as_of, batch_size, orders due now);
 * false: a procedure of its own, with no orders due.
 */
export const jobs = {
  cancel_expired_orders: { alias: 'cancel', dueOrders: true },
  confirm_shipped_orders: { alias: 'confirm', dueOrders: true },
  purge_cancelled_orders: { alias: 'purge', dueOrders: true },
  purge_history: { alias: 'purge-history', dueOrders: false },
} as const satisfies Record<string, { alias: string; dueOrders: boolean }>;
export type JobName = keyof typeof jobs;
export const jobNames = Object.keys(jobs) as readonly JobName[];
