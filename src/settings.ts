// The settings row: read it, change part of it. The table's constraints judge the values.
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
}

/** The settings' SQL names, as the CLI and the table spell them. */
export const settingNames = { paymentTimeout: 'payment_timeout', receiptTimeout: 'receipt_timeout', batchSize: 'batch_size', maxRunTime: 'max_run_time' } as const;

const selectSettings = `payment_timeout::text as "paymentTimeout", receipt_timeout::text as "receiptTimeout",
  batch_size as "batchSize", max_run_time::text as "maxRunTime"`;

export async function getSettings(db: Db): Promise<Settings> {
  const rows = await query<Settings>(db, `select ${selectSettings} from order_automation.settings`);
  return rows[0]!;
}

/** Changes the given settings in one statement: all of them or, when one is refused, none. */
export async function updateSettings(db: Db, changes: Partial<Settings>): Promise<Settings> {
  if (changes.batchSize !== undefined && !Number.isInteger(changes.batchSize)) {
    throw new InvalidSettingError(`batch_size must be a whole number, not ${JSON.stringify(changes.batchSize)}`);
  }
  try {
    const rows = await query<Settings>(db, `
      update order_automation.settings set
        payment_timeout = coalesce($1::interval, payment_timeout),
        receipt_timeout = coalesce($2::interval, receipt_timeout),
        batch_size = coalesce($3::integer, batch_size),
        max_run_time = coalesce($4::interval, max_run_time)
      returning ${selectSettings}`,
      [changes.paymentTimeout ?? null, changes.receiptTimeout ?? null, changes.batchSize ?? null, changes.maxRunTime ?? null]);
    return rows[0]!;
  } catch (error) {
    const code = (error as OrderAutomationError).sqlstate ?? (error as { code?: string }).code;
    // 22007/22008/22015/22P02/22003: not an interval, out of range, not an integer.
    if (code && /^22/.test(code)) {
      throw new InvalidSettingError(`setting refused: ${(error as Error).message}`, { sqlstate: code, cause: error });
    }
    throw error;
  }
}
