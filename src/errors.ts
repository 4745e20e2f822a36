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
/** OA009: the store of an order has no owner, or several, in user_store: its seller cannot be paid. */
export class NoStoreOwnerError extends OrderAutomationError {}
/** migrate without adopt on shop tables the package did not create: migrate({ adopt: true }) installs next to them. */
export class AdoptionRequiredError extends OrderAutomationError {}
/** migrate({ adopt: true }) on shop tables the package cannot work with; the message lists every reason. */
export class AdoptionMismatchError extends OrderAutomationError {}
/** A setting value refused by the settings table's constraints (or not a valid interval/number). */
export class InvalidSettingError extends OrderAutomationError {}
/** OA010: pg_cron is missing, not preloaded, or lives in another database. */
export class PgCronUnavailableError extends OrderAutomationError {}
/** OA011: a job of the package is scheduled, but pg_cron's cron.job no longer holds it (migrate re-creates it). */
export class PgCronJobMissingError extends OrderAutomationError {}
/** The database could not be reached (refused, unknown host, bad credentials, no such database). */
export class DatabaseUnreachableError extends OrderAutomationError {}
/** The package is not installed in the database (its schema or tables are missing): run migrate first. */
export class NotInstalledError extends OrderAutomationError {}
/** 42501: the role lacks a right the operation needs (or asked for something only the package's jobs may do). */
export class PermissionDeniedError extends OrderAutomationError {}

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
  OA009: NoStoreOwnerError,
  OA010: PgCronUnavailableError,
  OA011: PgCronJobMissingError,
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

/**
 * Failures pg reports without a SQLSTATE, by their message: the server closing the socket, no answer
 * before the connect timeout, SSL refused. Each becomes one paragraph that says what to check.
 */
function connectionFailure(error: unknown): DatabaseUnreachableError | undefined {
  const message = error instanceof Error ? error.message : undefined;
  if (message === undefined) return undefined;
  if (/^Connection terminated unexpectedly$/.test(message)) {
    return new DatabaseUnreachableError(
      'the database server closed the connection unexpectedly: it may have restarted or crashed, or something between (a proxy, a firewall, a pooler) cut the connection. Check that the server is up and try again.',
      { cause: error },
    );
  }
  if (/^(timeout expired|Connection terminated due to connection timeout)$/.test(message)) {
    return new DatabaseUnreachableError(
      'cannot reach the database: the server did not answer in time (10 s). Check the host and port of the connection string, and that no firewall drops the packets.',
      { cause: error },
    );
  }
  if (/^The server does not support SSL connections$/.test(message)) {
    return new DatabaseUnreachableError(
      'cannot reach the database: the connection asks for SSL (sslmode=require, or ssl in the settings) and the server does not accept SSL connections. Connect without SSL, or enable ssl on the server.',
      { cause: error },
    );
  }
  return undefined;
}

/**
 * node-pg-migrate wraps the error of creating its migrations table into a plain Error whose message
 * carries the whole stack: keep the first line (the server's message) and say what to grant.
 */
function migrationsTableFailure(error: unknown): OrderAutomationError | undefined {
  const message = error instanceof Error ? error.message : undefined;
  const match = message === undefined ? null : /^Unable to ensure migrations table: (?:error: )?(.*)$/m.exec(message);
  if (!match) return undefined;
  const reason = match[1]!.trim();
  if (/permission denied/.test(reason)) {
    return new PermissionDeniedError(
      `cannot create the migrations table public.order_automation_migrations: ${reason}. The installing role needs CREATE on schema public (as its owner or a superuser: GRANT CREATE ON SCHEMA public TO <role>) and CREATE on the database; nothing was installed.`,
      { sqlstate: '42501', cause: error },
    );
  }
  return new OrderAutomationError(
    `cannot create the migrations table public.order_automation_migrations: ${reason}. Nothing was installed.`,
    {
      cause: error,
    },
  );
}

/** Turns an error from `pg` into the package's typed error; anything unknown is returned as it is. */
export function toOrderAutomationError(error: unknown): unknown {
  if (error instanceof OrderAutomationError) return error;
  const pgError = findCode(error);
  if (!pgError?.code) return connectionFailure(error) ?? migrationsTableFailure(error) ?? error;
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
  if ((code === '42P01' || code === '3F000') && /order_automation/.test(message)) {
    return new NotInstalledError(
      `order-automation is not installed in this database (${message}): install it with order-automation migrate (or migrate()) first.`,
      { sqlstate: code, cause: error },
    );
  }
  if (code === '42501') {
    return new PermissionDeniedError(message, { sqlstate: code, hint: pgError.hint, cause: error });
  }
  if (code === '2D000') {
    return new OrderAutomationError(
      'the procedures commit after each batch, so they cannot run inside a transaction block: call them outside BEGIN ... COMMIT',
      { sqlstate: code, cause: error },
    );
  }
  return error;
}
