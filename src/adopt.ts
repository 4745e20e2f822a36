// Adopting an app's own shop tables: which of them exist, whether the package installed them, and
// whether their columns are ones the package can work with. All of it is read before migrate changes
// anything, so that a refusal leaves the database exactly as it was (not even a migrations table).
import type pg from 'pg';
import { AdoptionMismatchError, AdoptionRequiredError } from './errors.js';

export const shopTables = ['user', 'user_store', 'store', 'new_order', 'new_order_detail'] as const;
export type ShopTable = (typeof shopTables)[number];

const ids = ['text', 'character varying'];
const amounts = ['integer', 'bigint'];

/** The columns of the shop tables the package reads and writes, with the types it can work with. */
export const neededColumns: Record<ShopTable, Record<string, string[]>> = {
  user: { user_id: ids, balance: amounts },
  user_store: { store_id: ids, user_id: ids },
  store: { store_id: ids, book_id: ids, stock_level: amounts },
  new_order: { order_id: ids, user_id: ids, store_id: ids, state: ['integer', 'smallint'] },
  new_order_detail: { order_id: ids, book_id: ids, count: amounts, price: amounts },
};

/** The package's own columns of new_order: added where missing; a column of that name must have this type. */
export const packageColumns: Record<string, string> = {
  created_at: 'timestamp with time zone',
  paid_at: 'timestamp with time zone',
  shipped_at: 'timestamp with time zone',
  received_at: 'timestamp with time zone',
  cancelled_at: 'timestamp with time zone',
  pay_deadline: 'timestamp with time zone',
  receipt_deadline: 'timestamp with time zone',
  held_at: 'timestamp with time zone',
  hold_reason: 'text',
  receipt_extended_at: 'timestamp with time zone',
  reminded_state: 'smallint',
  failed_state: 'smallint',
};

/** The package's indexes on new_order (they share the namespace of every relation in public). */
const packageIndexes = ['new_order_pay_deadline_due', 'new_order_receipt_deadline_due', 'new_order_cancelled_at'];

const timeTypes = [
  'timestamp with time zone',
  'timestamp without time zone',
  'integer',
  'bigint',
  'numeric',
  'double precision',
];

export interface BackfillColumns {
  createdAtColumn?: string;
  shippedAtColumn?: string;
}

export function qualified(table: string): string {
  return table === 'user' ? 'public."user"' : `public.${table}`;
}

function list(words: string[]): string {
  return words.length <= 1 ? (words[0] ?? '') : `${words.slice(0, -1).join(', ')} and ${words.at(-1)}`;
}

/** The shop tables that exist in schema public (as tables or as anything else of that name). */
export async function existingShopTables(client: pg.ClientBase): Promise<ShopTable[]> {
  const { rows } = await client.query<{ name: ShopTable }>(
    `select c.relname as name from pg_catalog.pg_class c
      where c.relnamespace operator(pg_catalog.=) 'public'::pg_catalog.regnamespace
        and c.relname operator(pg_catalog.=) any ($1::pg_catalog.name[])`,
    [shopTables],
  );
  return shopTables.filter((t) => rows.some((r) => r.name === t));
}

/** Whether the package's migrations table records an install: then the shop tables are the package's (created or adopted). */
export async function packageInstalled(client: pg.ClientBase, migrationsTable: string): Promise<boolean> {
  const table = await client.query<{ found: boolean }>(
    `select pg_catalog.to_regclass(pg_catalog.format('public.%I', $1::pg_catalog.text)) is not null as found`,
    [migrationsTable],
  );
  if (!table.rows[0]!.found) return false;
  const { rows } = await client.query<{ installed: boolean }>(
    `select exists (select from public.${migrationsTable}) as installed`,
  );
  return rows[0]!.installed;
}

/** Refuses a plain install onto shop tables the package did not create, naming them. */
export function adoptionRequired(found: ShopTable[]): AdoptionRequiredError {
  const names = list(found.map(qualified));
  return new AdoptionRequiredError(
    `${names} already ${found.length === 1 ? 'exists' : 'exist'} and ${found.length === 1 ? 'was' : 'were'} not created by order-automation ` +
      `(its migrations table, public.order_automation_migrations, records no install), so nothing was changed. ` +
      `To install next to the app that owns ${found.length === 1 ? 'it' : 'them'}, keeping its tables and rows as they are, ` +
      `run order-automation migrate --adopt (in TypeScript: migrate(db, { adopt: true })); ` +
      `the README's "Adopting an existing database" gives the options.`,
  );
}

/** Everything that keeps the package from adopting the shop tables found; empty when it can. */
export async function adoptionMismatches(
  client: pg.ClientBase,
  found: ShopTable[],
  backfill: BackfillColumns,
): Promise<string[]> {
  const { rows: relations } = await client.query<{ name: ShopTable; kind: string; owner: string; owned: boolean }>(
    `select c.relname as name, c.relkind as kind, pg_catalog.pg_get_userbyid(c.relowner) as owner,
            pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') as owned
       from pg_catalog.pg_class c
      where c.relnamespace operator(pg_catalog.=) 'public'::pg_catalog.regnamespace
        and c.relname operator(pg_catalog.=) any ($1::pg_catalog.name[])`,
    [found],
  );
  const { rows: columns } = await client.query<{ table: string; column: string; type: string }>(
    `select c.relname as "table", a.attname as "column", pg_catalog.format_type(a.atttypid, null) as type
       from pg_catalog.pg_class c
       join pg_catalog.pg_attribute a on a.attrelid operator(pg_catalog.=) c.oid
      where c.relnamespace operator(pg_catalog.=) 'public'::pg_catalog.regnamespace
        and c.relname operator(pg_catalog.=) any ($1::pg_catalog.name[])
        and a.attnum operator(pg_catalog.>) 0 and not a.attisdropped`,
    [found],
  );
  const { rows: taken } = await client.query<{ name: string }>(
    `select c.relname as name from pg_catalog.pg_class c
      where c.relnamespace operator(pg_catalog.=) 'public'::pg_catalog.regnamespace
        and c.relname operator(pg_catalog.=) any ($1::pg_catalog.name[])
     union all
     select n.nspname from pg_catalog.pg_namespace n where n.nspname operator(pg_catalog.=) 'order_automation'`,
    [packageIndexes],
  );
  const typeOf = (table: string, column: string) => columns.find((c) => c.table === table && c.column === column)?.type;

  const mismatches: string[] = [];
  for (const relation of relations) {
    const name = qualified(relation.name);
    if (relation.kind !== 'r') {
      const kinds: Record<string, string> = {
        v: 'a view',
        m: 'a materialized view',
        p: 'a partitioned table',
        f: 'a foreign table',
        S: 'a sequence',
        i: 'an index',
      };
      mismatches.push(`${name} is ${kinds[relation.kind] ?? `a relation of kind ${relation.kind}`}, not a table`);
      continue;
    }
    if (!relation.owned) {
      mismatches.push(`${name} belongs to role "${relation.owner}": adopt it as that role (or one of its members)`);
    }
    for (const [column, types] of Object.entries(neededColumns[relation.name])) {
      const type = typeOf(relation.name, column);
      if (type === undefined) mismatches.push(`${name} has no column ${column} (needed as ${types.join(' or ')})`);
      else if (!types.includes(type)) mismatches.push(`${name}.${column} is ${type} (needed: ${types.join(' or ')})`);
    }
  }
  if (found.includes('new_order')) {
    for (const [column, type] of Object.entries(packageColumns)) {
      const has = typeOf('new_order', column);
      if (has !== undefined && has !== type) {
        mismatches.push(
          `public.new_order.${column} is ${has}, and the package keeps its own ${column} (${type}) there`,
        );
      }
    }
  }
  for (const [flag, column] of [
    ['--created-at-column', backfill.createdAtColumn],
    ['--shipped-at-column', backfill.shippedAtColumn],
  ] as const) {
    if (column === undefined) continue;
    const type = found.includes('new_order') ? typeOf('new_order', column) : undefined;
    if (type === undefined) mismatches.push(`${flag} ${column}: public.new_order has no column ${column}`);
    else if (!timeTypes.includes(type)) {
      mismatches.push(
        `${flag} ${column}: public.new_order.${column} is ${type}, not a time (timestamp, timestamptz, or epoch seconds as integer, bigint, numeric or double precision)`,
      );
    }
  }
  for (const { name } of taken) {
    mismatches.push(
      name === 'order_automation'
        ? 'schema order_automation already exists, though no install of the package is recorded: drop it or rename it'
        : `public.${name} already exists, and the package needs that name for an index of new_order`,
    );
  }
  return mismatches;
}

export function adoptionRefused(mismatches: string[]): AdoptionMismatchError {
  return new AdoptionMismatchError(
    `order-automation cannot adopt this database, so nothing was changed: ${mismatches.join('; ')}. ` +
      'The package needs text or varchar ids, integer or bigint money and counts, an integer or smallint state, ' +
      "and a store's owner in user_store (store_id, user_id).",
  );
}
