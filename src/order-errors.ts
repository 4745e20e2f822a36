// What PostgreSQL itself refuses in an order (a foreign key, a unique key, a check, a value that is
// not a number), said the way the lifecycle's own errors are: a typed class and a message naming the
// order and the argument, so `instanceof OrderAutomationError` catches every mistake a caller can make.
import { InvalidArgumentError, OrderExistsError, toOrderAutomationError } from './errors.js';

interface PgFields {
  code?: string;
  message?: string;
  table?: string;
  column?: string;
  constraint?: string;
  detail?: string;
}

export interface OrderContext {
  orderId: string;
  /** The lines as given, to name the one PostgreSQL refused. */
  items?: readonly { bookId: string; count: unknown; price: unknown }[];
  /** The interval argument of the call, by name (grace, by). */
  interval?: { name: string; value: string | undefined };
}

/** The column and value of a key in a constraint error's detail: `Key (user_id)=(nobody) is not present ...`. */
function keyOf(detail: string | undefined): { columns: string[]; values: string[] } | undefined {
  const match = /^Key \((.+?)\)=\((.*)\)/.exec(detail ?? '');
  if (!match) return undefined;
  return { columns: match[1]!.split(', '), values: match[2]!.split(', ') };
}

/** The first line whose `field` is not a whole number in range (or, for counts, not positive). */
function badLine(context: OrderContext, field: 'count' | 'price', refused?: string) {
  return context.items?.find((item) => {
    const value = item[field];
    if (refused !== undefined) return String(value) === refused;
    const n = Number(value);
    return !Number.isInteger(n) || (field === 'count' ? n < 1 : n < 0);
  });
}

const whole = {
  count: 'a whole number of books, at least 1',
  price: 'a whole number of the smallest currency unit (cents), 0 or more',
} as const;

/**
 * Maps an error of a lifecycle call on the order in `context` to a typed error naming what was
 * refused; the package's own errors (OA...) and anything unknown pass through as the module maps them.
 */
export function orderError(error: unknown, context: OrderContext): unknown {
  const mapped = toOrderAutomationError(error);
  const pg = (mapped === error ? error : undefined) as PgFields | undefined;
  if (!pg || typeof pg.code !== 'string') return mapped;
  const order = `order ${context.orderId}`;
  const options = { sqlstate: pg.code, cause: error };
  const key = keyOf(pg.detail);
  switch (pg.code) {
    case '23503': {
      // An order names its buyer and its store: both must exist.
      const column = key?.columns[0];
      const what = column === 'user_id' ? 'user' : column === 'store_id' ? 'store' : (column ?? 'row');
      return new InvalidArgumentError(
        `${order}: no such ${what} "${key?.values[0] ?? '?'}"${column ? ` (${column})` : ''}`,
        options,
      );
    }
    case '23505':
      if (pg.table === 'new_order_detail') {
        return new InvalidArgumentError(
          `${order}: book "${key?.values[1] ?? '?'}" is listed twice; give each book once, with its count`,
          options,
        );
      }
      return new OrderExistsError(`${order} already exists`, options);
    case '23514':
    case '23502': {
      const field = /count/.test(`${pg.constraint ?? ''} ${pg.column ?? ''}`)
        ? 'count'
        : /price/.test(`${pg.constraint ?? ''} ${pg.column ?? ''}`)
          ? 'price'
          : undefined;
      if (!field) break;
      const line = badLine(context, field);
      const value = line?.[field];
      return new InvalidArgumentError(
        `${order}: the ${field} of book "${line?.bookId ?? '?'}" must be ${whole[field]}, not ${value === undefined ? 'missing' : JSON.stringify(value)}`,
        options,
      );
    }
    case '22P02':
    case '22003': {
      // Lines are read as integer counts and bigint prices: "1.5" or "ten" is neither.
      if (context.items) {
        // Both messages quote the value: 'invalid input syntax for type bigint: "1.5"', 'value "…" is out of range for type integer'.
        const refused = /"(.*?)"/.exec(pg.message ?? '')?.[1];
        const field = /\bbigint\b/.test(pg.message ?? '')
          ? 'price'
          : /\binteger\b/.test(pg.message ?? '')
            ? 'count'
            : undefined;
        if (!field) break;
        const line = badLine(context, field, refused) ?? badLine(context, field);
        return new InvalidArgumentError(
          `${order}: the ${field} of book "${line?.bookId ?? '?'}" must be ${whole[field]}, not ${JSON.stringify(line?.[field] ?? refused)}`,
          options,
        );
      }
      break;
    }
    case '22007':
    case '22008':
    case '22015':
      if (context.interval) {
        return new InvalidArgumentError(
          `${order}: ${context.interval.name} must be an interval such as '10 minutes', not ${JSON.stringify(context.interval.value)}`,
          options,
        );
      }
      break;
  }
  return mapped;
}
