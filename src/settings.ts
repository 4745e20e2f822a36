// The settings row (and per-store overrides): read them, change part of them. The tables'
// constraints judge the values; a refused change changes nothing.
import { type Db, query } from './db.js';
import { InvalidSettingError, OrderAutomationError } from './errors.js';

export interface Settings {
  /** Deadline of a new order's payment, after it is placed (e.g. '00:10:00'). */
  paymentTimeout: string;
  /** Deadline of the buyer's confirmation of receipt, after shipping. */
  receiptTimeout: string;
  /** Orders per batch (one commit each). */
  batchSize: number;
  /** A run starts no new batch after this long. */
  maxRunTime: string;
  /** Default grace of paymentStarted(). */
  paymentGrace: string;
  /** Default extension of extendReceipt(). */
  receiptExtension: string;
  /** Due-soon reminders this long before a deadline; null: off. */
  remindBefore: string | null;
  /** Cancelled orders are deleted this long after cancellation; null: kept; '00:00:00': at once. */
  purgeCancelledAfter: string | null;
  /** The run log and pg_cron's run details of the jobs are kept this long. */
  historyRetention: string;
  // Added with deadline precision (to be ported into the settings descriptor).
  /** How late after its deadline an order may be processed; '00:01:00': one pass per pg_cron tick. */
  precision: string;
}

/** The settings' SQL names, as the CLI and the table spell them. */
export const settingNames = {
  paymentTimeout: 'payment_timeout',
  receiptTimeout: 'receipt_timeout',
  batchSize: 'batch_size',
  maxRunTime: 'max_run_time',
  paymentGrace: 'payment_grace',
  receiptExtension: 'receipt_extension',
  remindBefore: 'remind_before',
  purgeCancelledAfter: 'purge_cancelled_after',
  historyRetention: 'history_retention',
  precision: 'precision', // added with deadline precision
} as const satisfies Record<keyof Settings, string>;

const intervalColumns = [
  'payment_timeout',
  'receipt_timeout',
  'max_run_time',
  'payment_grace',
  'receipt_extension',
  'remind_before',
  'purge_cancelled_after',
  'history_retention',
  'precision', // added with deadline precision
] as const;

/** Column list reading every setting under its TypeScript name (intervals as text). */
const selectSettings = Object.entries(settingNames)
  .map(([key, column]) => (column === 'batch_size' ? `batch_size as "batchSize"` : `${column}::text as "${key}"`))
  .join(', ');

export async function getSettings(db: Db): Promise<Settings> {
  const rows = await query<Settings>(db, `select ${selectSettings} from order_automation.settings`);
  return rows[0]!;
}

/** Runs a change of settings, naming a value PostgreSQL could not even read (not an interval, not a number). */
async function judged<T>(change: () => Promise<T>): Promise<T> {
  try {
    return await change();
  } catch (error) {
    const code = (error as OrderAutomationError).sqlstate ?? (error as { code?: string }).code;
    // 22007/22008/22015/22P02/22003: not an interval, out of range, not an integer.
    if (code && /^22/.test(code)) {
      throw new InvalidSettingError(`setting refused: ${(error as Error).message}`, { sqlstate: code, cause: error });
    }
    throw error;
  }
}

/**
 * Changes the given settings in one statement: all of them or, when one is refused, none.
 * A key present with the value null sets a nullable setting to NULL (remindBefore, purgeCancelledAfter).
 */
export async function updateSettings(db: Db, changes: Partial<Settings>): Promise<Settings> {
  if (changes.batchSize !== undefined && !Number.isInteger(changes.batchSize)) {
    throw new InvalidSettingError(`batch_size must be a whole number, not ${JSON.stringify(changes.batchSize)}`);
  }
  const byColumn = Object.fromEntries(
    Object.entries(changes)
      .filter(([key, value]) => key in settingNames && value !== undefined)
      .map(([key, value]) => [settingNames[key as keyof Settings], value]),
  );
  // One static statement; each column changes only when its key is in the JSON object.
  const assignments = [
    ...intervalColumns.map(
      (c) => `${c} = case when $1::jsonb ? '${c}' then ($1::jsonb ->> '${c}')::interval else ${c} end`,
    ),
    `batch_size = case when $1::jsonb ? 'batch_size' then ($1::jsonb ->> 'batch_size')::integer else batch_size end`,
  ];
  return judged(
    async () =>
      (
        await query<Settings>(
          db,
          `update order_automation.settings set ${assignments.join(', ')} returning ${selectSettings}`,
          [JSON.stringify(byColumn)],
        )
      )[0]!,
  );
}

export interface StoreSettings {
  storeId: string;
  /** null: the global payment_timeout. */
  paymentTimeout: string | null;
  /** null: the global receipt_timeout. */
  receiptTimeout: string | null;
}

const selectStore = `store_id as "storeId", payment_timeout::text as "paymentTimeout", receipt_timeout::text as "receiptTimeout"`;

/** Every per-store override. */
export async function getStoreSettings(db: Db): Promise<StoreSettings[]> {
  return query<StoreSettings>(db, `select ${selectStore} from order_automation.store_settings order by store_id`);
}

/** Sets a store's overrides (null: back to the global setting); keys left out keep their value. */
export async function setStoreSettings(
  db: Db,
  storeId: string,
  changes: Partial<Omit<StoreSettings, 'storeId'>>,
): Promise<StoreSettings> {
  const json = JSON.stringify({
    ...(changes.paymentTimeout !== undefined && { payment_timeout: changes.paymentTimeout }),
    ...(changes.receiptTimeout !== undefined && { receipt_timeout: changes.receiptTimeout }),
  });
  return judged(
    async () =>
      (
        await query<StoreSettings>(
          db,
          `
    insert into order_automation.store_settings as s (store_id, payment_timeout, receipt_timeout)
    values ($1::text, ($2::jsonb ->> 'payment_timeout')::interval, ($2::jsonb ->> 'receipt_timeout')::interval)
    on conflict (store_id) do update set
      payment_timeout = case when $2::jsonb ? 'payment_timeout' then excluded.payment_timeout else s.payment_timeout end,
      receipt_timeout = case when $2::jsonb ? 'receipt_timeout' then excluded.receipt_timeout else s.receipt_timeout end
    returning ${selectStore}`,
          [storeId, json],
        )
      )[0]!,
  );
}

/** Removes a store's overrides: its new orders follow the global settings again. */
export async function clearStoreSettings(db: Db, storeId: string): Promise<void> {
  await query(db, 'delete from order_automation.store_settings where store_id = $1::text', [storeId]);
}
