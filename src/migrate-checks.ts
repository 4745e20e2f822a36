// The checks migrate makes before it changes anything: that the role may install (a refusal names
// every GRANT missing, in one paragraph), and that `down` drops no rows nobody confirmed dropping.
import type pg from 'pg';
import { OrderAutomationError, PermissionDeniedError } from './errors.js';
import { cronFindings, installFindings, paragraph, readSettingsFinding, roleFacts, rolesWarning } from './preflight.js';

/**
 * @internal Refuses, before anything is applied, an install this role cannot finish; returns the
 * warnings of one it can (the roles it cannot create), also told to `log`.
 */
export async function installPreflight(
  client: pg.ClientBase,
  options: { cronHere: boolean; cronUnknown: boolean; log?: (line: string) => void },
): Promise<string[]> {
  const facts = await roleFacts(client);
  const database = (await client.query<{ db: string }>('select pg_catalog.current_database()::text as db')).rows[0]!.db;
  const findings = installFindings(facts, database);
  if (options.cronUnknown) findings.push(readSettingsFinding(facts.role, database));
  if (options.cronHere) findings.push(...(await cronFindings(client, facts.role, 'here')));
  if (findings.length > 0) {
    throw new PermissionDeniedError(
      `${paragraph(`order-automation cannot be installed by role "${facts.role}" into database "${database}":`, findings)} Nothing was applied; run ${findings.length === 1 ? 'it' : 'them'} and migrate again.`,
      { sqlstate: '42501' },
    );
  }
  // Only a fresh install creates the roles: say so once, before it happens.
  const warning = facts.installed ? null : rolesWarning(facts);
  if (!warning) return [];
  const text = `${warning.summary}. To have them: ${warning.fix.where}, run ${warning.fix.lines.join(' ')}`;
  options.log?.(`warning: ${text}`);
  return [text];
}

/**
 * What each migration's `down` drops that can hold an app's rows (the package's own settings and
 * job rows are not counted: they are recreated by the next install). On an adopted database the
 * adopting release's down drops all of them at once, but for the app's own tables, which it keeps.
 */
const droppedByDown: Record<string, readonly string[]> = {
  '0001_core': [
    'public.new_order_detail',
    'public.new_order',
    'public.store',
    'public.user_store',
    'public."user"',
    'order_automation.order_event',
    'order_automation.run',
    'order_automation.order_failure',
  ],
  '0002_shop_features': ['order_automation.store_settings'],
};

/** @internal Refuses a `down` that would drop tables holding rows, unless confirmed; changes nothing. */
export async function confirmDown(client: pg.ClientBase, options: { count?: number; confirm: boolean }): Promise<void> {
  if (options.confirm) return;
  // Catalog lookups first: a failed query would abort a transaction the caller's client may be in.
  const known = await client.query<{ name: string }>(
    `select t as name from pg_catalog.unnest($1::text[]) t where pg_catalog.to_regclass(t) is not null`,
    [
      [
        'public.order_automation_migrations',
        'order_automation.adopted_table',
        ...new Set(Object.values(droppedByDown).flat()),
      ],
    ],
  );
  const exists = new Set(known.rows.map((r) => r.name));
  if (!exists.has('public.order_automation_migrations')) return;
  // An adopted app's own tables stay, with their rows: only what the package created goes.
  if (exists.has('order_automation.adopted_table')) {
    const kept = await client.query<{ name: string }>(
      `select pg_catalog.format('public.%I', t.table_name) as name from order_automation.adopted_table t`,
    );
    for (const { name } of kept.rows) exists.delete(name);
  }
  const applied = await client.query<{ name: string }>(
    'select name from public.order_automation_migrations order by run_on, id',
  );
  const reverted = applied.rows.map((r) => r.name).slice(-(options.count ?? Infinity));
  const holding: string[] = [];
  for (const table of reverted.flatMap((name) => droppedByDown[name] ?? []).filter((t) => exists.has(t))) {
    // The names come from the list above, never from input.
    const { rows } = await client.query<{ rows: boolean }>(`select exists (select from ${table}) as rows`);
    if (rows[0]!.rows) holding.push(table);
  }
  if (holding.length > 0) {
    throw new OrderAutomationError(
      `migrate --down would drop ${holding.length === 1 ? 'a table that holds' : 'tables that hold'} rows: ${holding.join(', ')}. Nothing was changed. To drop ${holding.length === 1 ? 'it' : 'them'} with ${holding.length === 1 ? 'its' : 'their'} rows, confirm: order-automation migrate --down --yes (in code: migrate(db, { direction: 'down', confirm: true })).`,
    );
  }
}
