// Typed errors: every SQLSTATE the package documents maps to one class, so callers branch on
// `instanceof` (or `.code`) instead of parsing messages.

export class OrderAutomationError extends Error {
  /** The SQLSTATE the database raised, when it came from the database. */
  readonly sqlstate: string | undefined;
  readonly hint: string | undefined;
  constructor(message: string, options: { sqlstate?: string; hint?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.sqlstate = options.sqlstate;
    this.hint = options.hint;
  }
}

/** OA001: a state change (or delete) the order lifecycle does not allow. */
export class InvalidTransitionError extends OrderAutomationError {}
/** OA002: the store does not have (or does not stock) the books asked for. */
export class InsufficientStockError extends OrderAutomationError {}
/** OA003: the buyer's balance does not cover the order. */
export class InsufficientBalanceError extends OrderAutomationError {}
/** OA004: the lines of an order that is no longer unpaid cannot change. */
export class OrderNotModifiableError extends OrderAutomationError {}
/** OA005: the order named does not exist. */
export class OrderNotFoundError extends OrderAutomationError {}
/** OA006: a bad argument to a package routine. */
export class InvalidArgumentError extends OrderAutomationError {}
/** Placing an order under an id that is taken (23505 on new_order): retrying a placement that went through, say. */
export class OrderExistsError extends InvalidArgumentError {}
/** OA007: the receipt deadline of this order was already extended once. */
export class ReceiptAlreadyExtendedError extends OrderAutomationError {}
/** OA008: holding an order already held, or releasing one that is not. */
export class HoldConflictError extends OrderAutomationError {}
/** A setting value refused by the settings table's constraints (or not a valid interval/number). */
export class InvalidSettingError extends OrderAutomationError {}
/** OA010: pg_cron is missing, not preloaded, or lives in another database. */
export class PgCronUnavailableError extends OrderAutomationError {}
/** The database could not be reached (refused, unknown host, bad credentials, no such database). */
export class DatabaseUnreachableError extends OrderAutomationError {}

/** The class of each SQLSTATE the package raises (a test holds it equal to the codes sql/ raises). */
export const errorClassBySqlstate: Readonly<
  Record<
    string,
    new (message: string, options: { sqlstate?: string; hint?: string; cause?: unknown }) => OrderAutomationError
  >
> = {
  OA001: InvalidTransitionError,
  OA002: InsufficientStockError,
  OA003: InsufficientBalanceError,
  OA004: OrderNotModifiableError,
  OA005: OrderNotFoundError,
  OA006: InvalidArgumentError,
  OA007: ReceiptAlreadyExtendedError,
  OA008: HoldConflictError,
  OA010: PgCronUnavailableError,
};

// Connection-level failures: network errors of Node and the server's "who are you" refusals.
const unreachableCodes = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ECONNRESET',
  '28P01',
  '28000',
  '3D000',
  '57P03',
]);

interface PgLikeError {
  code?: string;
  message?: string;
  hint?: string;
  constraint?: string;
  table?: string;
  cause?: unknown;
  errors?: unknown[];
}

function findCode(error: unknown): PgLikeError | undefined {
  // node-pg-migrate wraps errors; AggregateError (connect to localhost on ::1 and 127.0.0.1) nests them.
  for (
    let e = error as PgLikeError | undefined, depth = 0;
    e && depth < 5;
    e = e.cause as PgLikeError | undefined, depth++
  ) {
    if (typeof e.code === 'string') return e;
    if (Array.isArray(e.errors) && e.errors.length > 0) return findCode(e.errors[0]);
  }
  return undefined;
}

/** Turns an error from `pg` into the package's typed error; anything unknown is returned as it is. */
export function toOrderAutomationError(error: unknown): unknown {
  if (error instanceof OrderAutomationError) return error;
  const pgError = findCode(error);
  if (!pgError?.code) return error;
  const { code } = pgError;
  const message = pgError.message || String(error);
  const Known = errorClassBySqlstate[code];
  if (Known) return new Known(message, { sqlstate: code, hint: pgError.hint, cause: error });
  if (code === '23514' && (pgError.table === 'settings' || pgError.table === 'store_settings')) {
    return new InvalidSettingError(`setting refused: ${pgError.constraint ?? message}`, {
      sqlstate: code,
      cause: error,
    });
  }
  if (code === '23503' && pgError.table === 'store_settings') {
    return new InvalidArgumentError(`no such store: ${message}`, { sqlstate: code, cause: error });
  }
  if (unreachableCodes.has(code)) {
    return new DatabaseUnreachableError(`cannot reach the database: ${message}`, { sqlstate: code, cause: error });
  }
  if (code === '2D000') {
    return new OrderAutomationError(
      'the procedures commit after each batch, so they cannot run inside a transaction block: call them outside BEGIN ... COMMIT',
      { sqlstate: code, cause: error },
    );
  }
  return error;
}
