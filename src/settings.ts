// The settings row (and per-store overrides): read them, change part of them. The tables'
// constraints judge the values; a refused change changes nothing.
import { type Db, query } from './db.js';
import { InvalidSettingError, OrderAutomationError } from './errors.js';

/**
 * Every setting, once: its TypeScript name, its column in order_automation.settings, its kind and
 * whether it may be NULL (off), and what it does. The Settings type, the SQL below and the command
 * line's parsing and help all derive from it; a test holds it equal to the table's columns.
 */
export const settingsDescriptor = {
  paymentTimeout: {
    column: 'payment_timeout',
    kind: 'interval',
    nullable: false,
    doc: "deadline of a new order's payment, after it is placed",
  },
  receiptTimeout: {
    column: 'receipt_timeout',
    kind: 'interval',
    nullable: false,
    doc: "deadline of the buyer's confirmation of receipt, after shipping",
  },
  batchSize: { column: 'batch_size', kind: 'integer', nullable: false, doc: 'orders per batch (one commit each)' },
  maxRunTime: {
    column: 'max_run_time',
    kind: 'interval',
    nullable: false,
    doc: 'a run starts no new batch after this long',
  },
  paymentGrace: {
    column: 'payment_grace',
    kind: 'interval',
    nullable: false,
    doc: 'default grace of payment_started()',
  },
  receiptExtension: {
    column: 'receipt_extension',
    kind: 'interval',
    nullable: false,
    doc: 'default extension of extend_receipt()',
  },
  remindBefore: {
    column: 'remind_before',
    kind: 'interval',
    nullable: true,
    doc: 'due-soon reminders this long before a deadline; off: none',
  },
  purgeCancelledAfter: {
    column: 'purge_cancelled_after',
    kind: 'interval',
    nullable: true,
    doc: 'cancelled orders are deleted this long after cancellation; off: kept; 0: at once',
  },
  historyRetention: {
    column: 'history_retention',
    kind: 'interval',
    nullable: false,
    doc: "the run log and pg_cron's run details of the jobs are kept this long",
  },
  bookkeeping: {
    column: 'bookkeeping',
    kind: 'text',
    nullable: false,
    doc: "full: the database books every writer's changes; automation: only the package's own jobs",
  },
  stateUnpaid: {
    column: 'state_unpaid',
    kind: 'integer',
    nullable: false,
    doc: 'the code new_order.state uses for unpaid',
  },
  statePaid: { column: 'state_paid', kind: 'integer', nullable: false, doc: 'the code new_order.state uses for paid' },
  stateShipped: {
    column: 'state_shipped',
    kind: 'integer',
    nullable: false,
    doc: 'the code new_order.state uses for shipped',
  },
  stateReceived: {
    column: 'state_received',
    kind: 'integer',
    nullable: false,
    doc: 'the code new_order.state uses for received',
  },
  stateCancelled: {
    column: 'state_cancelled',
    kind: 'integer',
    nullable: false,
    doc: 'the code new_order.state uses for cancelled (an adopted app may use -1)',
  },
  precision: {
    column: 'precision',
    kind: 'interval',
    nullable: false,
    doc: "how late after its deadline an order may be processed; '1 minute': one pass per pg_cron tick",
  },
} as const satisfies Record<
  string,
  { column: string; kind: 'interval' | 'integer' | 'text'; nullable: boolean; doc: string }
>;

type Descriptor = typeof settingsDescriptor;
export type SettingName = keyof Descriptor;

/**
 * The settings row under TypeScript names: intervals in words, as a person sets them ('10 minutes',
 * '1 day 2 hours'; see intervalText), integers as numbers, null where a nullable setting is off.
 * See settingsDescriptor for what each one does.
 */
export type Settings = {
  -readonly [K in SettingName]:
    | (Descriptor[K]['kind'] extends 'integer' ? number : string)
    | (Descriptor[K]['nullable'] extends true ? null : never);
};

const settingEntries = Object.entries(settingsDescriptor) as [SettingName, (typeof settingsDescriptor)[SettingName]][];

/** The settings' SQL names, as the CLI and the table spell them. */
export const settingNames = Object.fromEntries(settingEntries.map(([key, d]) => [key, d.column])) as {
  readonly [K in SettingName]: Descriptor[K]['column'];
};

const intervalUnits = ['year', 'month', 'day', 'hour', 'minute', 'second'] as const;

/**
 * An interval's fields, read whatever the session's IntervalStyle: years, months, days, hours,
 * minutes, seconds (with their fraction) as PostgreSQL keeps them: days and months apart from the time
 * of day, which it keeps in microseconds ('90 minutes' comes back as 1 hour 30 minutes).
 */
function intervalFields(column: string): string {
  return `case when ${column} is not null then array[${intervalUnits
    .map((unit) => `extract(${unit} from ${column})`)
    .join(', ')}]::text[] end`;
}

/**
 * An interval in words, in the units it was given: '10 minutes', '1 day 2 hours', '30 seconds', '0'.
 * PostgreSQL reads the text back as the same interval. (PostgreSQL's own text, '00:10:00', is not
 * what anyone sets; its styles never print '10 minutes'.) '60 seconds' reads back as '1 minute'.
 */
export function intervalText(fields: readonly string[] | null): string | null {
  if (fields === null) return null;
  const words = intervalUnits.flatMap((unit, i) => {
    const n = Number(fields[i]);
    return n === 0 ? [] : [`${n} ${unit}${Math.abs(n) === 1 ? '' : 's'}`];
  });
  return words.length === 0 ? '0' : words.join(' ');
}

/** Column list reading every setting under its TypeScript name (intervals as their fields). */
const selectSettings = settingEntries
  .map(([key, d]) => (d.kind === 'interval' ? `${intervalFields(d.column)} as "${key}"` : `${d.column} as "${key}"`))
  .join(', ');

type SettingsRow = Record<SettingName, string[] | number | null>;

function toSettings(row: SettingsRow): Settings {
  return Object.fromEntries(
    settingEntries.map(([key, d]) => [
      key,
      d.kind === 'interval' ? intervalText(row[key] as string[] | null) : row[key],
    ]),
  ) as Settings;
}

export async function getSettings(db: Db): Promise<Settings> {
  const rows = await query<SettingsRow>(db, `select ${selectSettings} from order_automation.settings`);
  return toSettings(rows[0]!);
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
 * A key present with the value null switches a nullable setting off (NULL).
 */
export async function updateSettings(db: Db, changes: Partial<Settings>): Promise<Settings> {
  for (const [key, d] of settingEntries) {
    const value: unknown = changes[key];
    if (d.kind === 'integer' && value !== undefined && !(value === null && d.nullable) && !Number.isInteger(value)) {
      throw new InvalidSettingError(`${d.column} must be a whole number, not ${JSON.stringify(value)}`);
    }
  }
  const byColumn = Object.fromEntries(
    settingEntries.filter(([key]) => changes[key] !== undefined).map(([key, d]) => [d.column, changes[key]]),
  );
  // One static statement; each column changes only when its key is in the JSON object.
  const assignments = settingEntries.map(
    ([, { column: c, kind }]) =>
      `${c} = case when $1::jsonb ? '${c}' then ($1::jsonb ->> '${c}')::${kind} else ${c} end`,
  );
  return judged(async () =>
    toSettings(
      (
        await query<SettingsRow>(
          db,
          `update order_automation.settings set ${assignments.join(', ')} returning ${selectSettings}`,
          [JSON.stringify(byColumn)],
        )
      )[0]!,
    ),
  );
}

export interface StoreSettings {
  storeId: string;
  /** null: the global payment_timeout. */
  paymentTimeout: string | null;
  /** null: the global receipt_timeout. */
  receiptTimeout: string | null;
}

const selectStore = `store_id as "storeId", ${intervalFields('payment_timeout')} as "paymentTimeout", ${intervalFields('receipt_timeout')} as "receiptTimeout"`;

type StoreSettingsRow = { storeId: string; paymentTimeout: string[] | null; receiptTimeout: string[] | null };

const toStoreSettings = (row: StoreSettingsRow): StoreSettings => ({
  storeId: row.storeId,
  paymentTimeout: intervalText(row.paymentTimeout),
  receiptTimeout: intervalText(row.receiptTimeout),
});

/** Every per-store override. */
export async function getStoreSettings(db: Db): Promise<StoreSettings[]> {
  return (
    await query<StoreSettingsRow>(db, `select ${selectStore} from order_automation.store_settings order by store_id`)
  ).map(toStoreSettings);
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
  return judged(async () =>
    toStoreSettings(
      (
        await query<StoreSettingsRow>(
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
    ),
  );
}

/** Removes a store's overrides: its new orders follow the global settings again. */
export async function clearStoreSettings(db: Db, storeId: string): Promise<void> {
  await query(db, 'delete from order_automation.store_settings where store_id = $1::text', [storeId]);
}
