#!/usr/bin/env node
// The order-automation command: install the package, look at the automation, run it by hand, change
// its settings, read the order history. A thin shell over the exported functions; the database judges.
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import {
  cancelExpiredOrders,
  clearStoreSettings,
  confirmShippedOrders,
  DatabaseUnreachableError,
  getSettings,
  getStatus,
  getStoreSettings,
  holdOrder,
  InvalidSettingError,
  jobNames,
  migrate,
  OrderAutomationError,
  pauseJob,
  purgeCancelledOrders,
  purgeHistory,
  readOrderEvents,
  releaseOrder,
  resumeJob,
  setSchedule,
  setStoreSettings,
  settingNames,
  updateSettings,
  watchEvents,
  type JobName,
  type MigrateOptions,
  orderStates,
  type OrderState,
  type OrderEvent,
  type Settings,
  type Status,
  type StoreSettings,
} from './index.js';

export interface Io {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

/** A mistake in the command line: exit code 2 and a pointer to --help. */
class UsageError extends Error {}

const options = {
  'database-url': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
  down: { type: 'boolean' },
  'no-schedule': { type: 'boolean' },
  'as-of': { type: 'string' },
  'batch-size': { type: 'string' },
  order: { type: 'string' },
  after: { type: 'string' },
  limit: { type: 'string' },
  follow: { type: 'boolean', short: 'f' },
  // migrate: adopting an app's own database (added by the adopt change).
  adopt: { type: 'boolean' },
  'created-at-column': { type: 'string' },
  'shipped-at-column': { type: 'string' },
  bookkeeping: { type: 'string' },
  'state-codes': { type: 'string' },
} as const;
type OptionName = keyof typeof options;
const globalOptions: OptionName[] = ['database-url', 'json', 'help', 'version'];

interface Context {
  url: string;
  args: string[];
  values: Partial<Record<OptionName, string | boolean>>;
  log: (line: string) => void;
  /** A line of output as it happens (events --follow). */
  print: (line: string) => void;
}

interface Command {
  usage: string;
  summary: string;
  /** What `<command> --help` adds to the usage line. */
  details: string;
  options: OptionName[];
  /** The result as data (printed by --json) and as text. */
  run(context: Context): Promise<{ data: unknown; text: string }>;
}

const settingKeys = Object.fromEntries(
  Object.entries(settingNames).map(([key, name]) => [name, key as keyof Settings]),
);
/** Settings that may be switched off (NULL). */
const nullableSettings: (keyof Settings)[] = ['remindBefore', 'purgeCancelledAfter'];
/** Short names of the jobs on the command line. */
const jobAliases: Record<string, JobName> = {
  cancel: 'cancel_expired_orders',
  confirm: 'confirm_shipped_orders',
  purge: 'purge_cancelled_orders',
  'purge-history': 'purge_history',
};

const commands: Record<string, Command> = {
  migrate: {
    usage:
      'migrate [--down] [--no-schedule] [--adopt [--created-at-column <col>] [--shipped-at-column <col>]] [--bookkeeping full|automation] [--state-codes <state>=<code>,...]',
    summary: 'install the package (or, with --down, remove it) and schedule its pg_cron jobs',
    details: `Applies every pending migration in one transaction; running it twice, or twice at once, does no harm.
  --down          revert every migration: removes the package's schema, tables and pg_cron jobs
  --no-schedule   install without pg_cron jobs (same as ORDER_AUTOMATION_SCHEDULE=off); you then run
                  the automation yourself, e.g. with order-automation run cancel
  --adopt         install onto the shop tables an app created: they and their rows are kept as they are
                  (the package adds only its own columns, indexes, triggers, schema and jobs)
  --created-at-column <col>, --shipped-at-column <col>
                  with --adopt: new_order's own columns of creation / shipping times (timestamp, timestamptz
                  or epoch seconds; 0 or NULL: not set) give the open orders' deadlines (default: from now)
  --bookkeeping full|automation
                  full (default): the database books every change (stock, money); automation (default with
                  --adopt): only the package's own jobs, for an app that books its own changes
  --state-codes <state>=<code>,...
                  the codes new_order.state uses, if not 0-4, e.g. --state-codes cancelled=-1
                  (states: unpaid, paid, shipped, received, cancelled)
The last four apply to a first install; later, change the settings with order-automation settings set.`,
    options: ['down', 'no-schedule', 'adopt', 'created-at-column', 'shipped-at-column', 'bookkeeping', 'state-codes'],
    async run({ url, args, values, log }) {
      noMore(args); // "migrate down" is not --down: refuse it rather than migrate up
      const down = values.down === true;
      const result = await migrate(url, {
        direction: down ? 'down' : 'up',
        schedule: values['no-schedule'] !== true && scheduleFromEnv(),
        log,
        ...adoptOptions(values), // added by the adopt change
      });
      const lines = result.migrations.map((name) => `${down ? 'reverted' : 'applied'} ${name}`);
      if (lines.length === 0) lines.push(down ? 'nothing to revert' : 'already up to date: no migration to apply');
      if (!down) {
        lines.push(
          result.scheduledIn === null
            ? 'the jobs are not scheduled in pg_cron: run them with order-automation run cancel|confirm, or run order-automation migrate again without --no-schedule to schedule them'
            : `the jobs are scheduled by pg_cron in database "${result.scheduledIn}"`,
        );
      }
      return { data: result, text: lines.join('\n') };
    },
  },
  status: {
    usage: 'status',
    summary: 'each job: schedule, active, last run, orders due now, next deadline; and the settings',
    details: 'Shows what pg_cron runs and how the last runs went.',
    options: [],
    async run({ url }) {
      const status = await getStatus(url);
      return { data: status, text: statusText(status, new Date()) };
    },
  },
  run: {
    usage: 'run cancel|confirm|purge|purge-history [--as-of <time>] [--batch-size <n>]',
    summary: 'run one job now: cancel unpaid orders past their payment deadline, confirm shipped ones, purge',
    details: `run cancel cancels every unpaid order past its payment deadline; run confirm marks received every
shipped order past its receipt deadline; run purge deletes cancelled orders older than purge_cancelled_after;
run purge-history deletes the run log older than history_retention. Prints how many.
  --as-of <time>     process what is due at this ISO 8601 time, e.g. 2030-01-01T12:00:00Z (default: now)
  --batch-size <n>   orders per batch and commit (default: the batch_size setting)`,
    options: ['as-of', 'batch-size'],
    async run({ url, args, values }) {
      const [which, ...extra] = args;
      if (which === undefined || !Object.hasOwn(jobAliases, which)) {
        throw new UsageError(
          `run takes ${Object.keys(jobAliases).join(', ')}${which === undefined ? '' : `, not "${which}"`}`,
        );
      }
      noMore(extra);
      const asOf = values['as-of'] === undefined ? undefined : timestamp('--as-of', String(values['as-of']));
      const batchSize = wholeNumber('--batch-size', values['batch-size']);
      switch (which) {
        case 'cancel': {
          const data = await cancelExpiredOrders(url, { asOf, batchSize });
          return { data, text: `cancelled ${plural(data.cancelled, 'order')}` };
        }
        case 'confirm': {
          const data = await confirmShippedOrders(url, { asOf, batchSize });
          return { data, text: `confirmed ${plural(data.confirmed, 'order')}` };
        }
        case 'purge': {
          const data = await purgeCancelledOrders(url, { asOf, batchSize });
          return { data, text: `purged ${plural(data.purged, 'cancelled order')}` };
        }
        default: {
          const data = await purgeHistory(url);
          return { data, text: `purged ${plural(data.purged, 'history row')}` };
        }
      }
    },
  },
  settings: {
    usage: 'settings [get] | settings set <name>=<value> ...',
    summary: 'show the settings, or change some of them (all or none)',
    details: `The settings: ${Object.values(settingNames).join(', ')}. Intervals are written as PostgreSQL reads
them: 10 minutes, 1 day, 00:00:30; remind_before and purge_cancelled_after also take off (NULL).
Example: order-automation settings set payment_timeout='15 minutes' batch_size=500
When one value is refused, no setting changes.`,
    options: [],
    async run({ url, args }) {
      const [action = 'get', ...pairs] = args;
      if (action === 'get') {
        noMore(pairs);
        const settings = await getSettings(url);
        return { data: settings, text: settingsText(settings) };
      }
      if (action !== 'set') throw new UsageError(`settings takes get or set, not "${action}"`);
      if (pairs.length === 0) throw new UsageError('settings set needs at least one <name>=<value>');
      const changes = settingChanges(pairs);
      try {
        const settings = await updateSettings(url, changes);
        return { data: settings, text: settingsText(settings) };
      } catch (error) {
        if (error instanceof InvalidSettingError) {
          throw new InvalidSettingError(`${sentence(error.message)} No setting was changed.`, {
            sqlstate: error.sqlstate,
            hint: error.hint,
            cause: error,
          });
        }
        throw error;
      }
    },
  },
  'store-settings': {
    usage: 'store-settings [get] | store-settings set <store> <name>=<value> ... | store-settings clear <store>',
    summary: 'per-store payment_timeout / receipt_timeout overrides: show, set, or clear',
    details: `Deadlines of a store's new orders and new shipments follow its overrides; a value of off (NULL)
or a cleared store follows the global setting. Example: order-automation store-settings set store1 payment_timeout='30 minutes'`,
    options: [],
    async run({ url, args }) {
      const [action = 'get', storeId, ...pairs] = args;
      if (action === 'get') {
        noMore(args.slice(1));
        const stores = await getStoreSettings(url);
        return { data: stores, text: storesText(stores) };
      }
      if (action !== 'set' && action !== 'clear')
        throw new UsageError(`store-settings takes get, set or clear, not "${action}"`);
      if (storeId === undefined) throw new UsageError(`store-settings ${action} needs a store id`);
      if (action === 'clear') {
        noMore(pairs);
        await clearStoreSettings(url, storeId);
        return { data: { storeId, cleared: true }, text: `store ${storeId} follows the global settings` };
      }
      if (pairs.length === 0) throw new UsageError('store-settings set needs at least one <name>=<value>');
      const changes: { paymentTimeout?: string | null; receiptTimeout?: string | null } = {};
      for (const [name, value] of pairs.map(splitPair)) {
        const key =
          name === 'payment_timeout' ? 'paymentTimeout' : name === 'receipt_timeout' ? 'receiptTimeout' : undefined;
        if (!key)
          throw new UsageError(
            `unknown store setting "${name}"; the store settings are payment_timeout, receipt_timeout`,
          );
        if (key in changes) throw new UsageError(`${name} is given twice`);
        changes[key] = isOff(value) ? null : value;
      }
      const stored = await setStoreSettings(url, storeId, changes);
      return { data: stored, text: storesText([stored]) };
    },
  },
  hold: {
    usage: 'hold <order> <reason>',
    summary: 'hold an order (dispute, refund, review): neither auto-cancelled nor auto-confirmed until released',
    details: 'Its countdown pauses; release resumes it with the time that was left.',
    options: [],
    async run({ url, args }) {
      const [orderId, reason, ...extra] = args;
      if (orderId === undefined || reason === undefined) throw new UsageError('hold needs an order id and a reason');
      noMore(extra);
      const order = await holdOrder(url, orderId, reason);
      return { data: order, text: `order ${order.orderId} held: ${order.holdReason}` };
    },
  },
  release: {
    usage: 'release <order>',
    summary: 'release a held order: its countdown resumes with the time that was left',
    details: '',
    options: [],
    async run({ url, args }) {
      const [orderId, ...extra] = args;
      if (orderId === undefined) throw new UsageError('release needs an order id');
      noMore(extra);
      const order = await releaseOrder(url, orderId);
      const deadline =
        order.state === 'unpaid' ? order.payDeadline : order.state === 'shipped' ? order.receiptDeadline : null;
      return { data: order, text: `order ${order.orderId} released${deadline ? `; deadline ${time(deadline)}` : ''}` };
    },
  },
  schedule: {
    usage: 'schedule set <job> <cron> | schedule pause <job> | schedule resume <job>',
    summary: 'change when pg_cron runs a job, or pause and resume it',
    details: `Jobs: ${Object.keys(jobAliases).join(', ')} (or their full names). Cron syntax as pg_cron reads it, in UTC,
e.g. order-automation schedule set cancel '*/5 * * * *'. An invalid schedule is refused and nothing changes.`,
    options: [],
    async run({ url, args }) {
      const [action, name, ...rest] = args;
      if (action !== 'set' && action !== 'pause' && action !== 'resume') {
        throw new UsageError(`schedule takes set, pause or resume${action === undefined ? '' : `, not "${action}"`}`);
      }
      const job =
        name === undefined
          ? undefined
          : ((Object.hasOwn(jobAliases, name) ? jobAliases[name] : undefined) ?? jobNames.find((j) => j === name));
      if (job === undefined)
        throw new UsageError(`schedule ${action} needs a job: ${Object.keys(jobAliases).join(', ')}`);
      if (action === 'set') {
        const [cron, ...extra] = rest;
        if (cron === undefined) throw new UsageError('schedule set needs a cron schedule, e.g. "*/5 * * * *"');
        noMore(extra);
        await setSchedule(url, job, { schedule: cron });
      } else {
        noMore(rest);
        await (action === 'pause' ? pauseJob : resumeJob)(url, job);
      }
      const status = (await getStatus(url)).jobs.find((j) => j.job === job)!;
      return {
        data: status,
        text: `${job}: ${status.schedule}, ${status.active ? `active, next run ${status.nextRunAt ? time(status.nextRunAt) : '-'}` : 'paused'}`,
      };
    },
  },
  events: {
    usage: 'events [--order <id>] [--after <id>] [--limit <n>] [--follow]',
    summary: 'the order history: every state change, in order; --follow waits for new ones',
    details: `  --order <id>   only this order's events
  --after <id>   only events after this event id (to page, or to resume)
  --limit <n>    at most this many events (default 1000)
  -f, --follow   keep printing events as they are written (woken by NOTIFY) until Ctrl-C; with --json one
                 JSON object per line`,
    options: ['order', 'after', 'limit', 'follow'],
    async run({ url, args, values, print }) {
      noMore(args);
      const orderId = values.order === undefined ? undefined : String(values.order);
      const afterId = wholeNumber('--after', values.after);
      if (values.follow) {
        const stop = new AbortController();
        process.once('SIGINT', () => stop.abort());
        for await (const event of watchEvents(url, { afterId, signal: stop.signal })) {
          if (orderId === undefined || event.orderId === orderId)
            print(values.json ? JSON.stringify(event) : eventLine(event));
        }
        return { data: undefined, text: '' };
      }
      const events = await readOrderEvents(url, { orderId, afterId, limit: wholeNumber('--limit', values.limit) });
      const rows = events.map((e) => [
        String(e.id),
        e.orderId,
        e.from ?? '-',
        e.to ?? '-',
        e.cause,
        time(e.at),
        e.note ?? '',
      ]);
      return {
        data: events,
        text:
          events.length === 0 ? 'no events' : columns([['id', 'order', 'from', 'to', 'cause', 'at', 'note'], ...rows]),
      };
    },
  },
};

function usage(): string {
  return `Usage: order-automation <command> [options]

Cancels unpaid orders past their payment deadline and confirms shipped orders past their receipt
deadline, inside PostgreSQL, on pg_cron's schedule.

Commands:
${Object.values(commands)
  .map((c) => `  ${c.usage}\n      ${c.summary}`)
  .join('\n')}

Options of every command:
  --database-url <url>   postgres://user:password@host:port/database (default: $DATABASE_URL)
  --json                 print JSON instead of text
  -h, --help             this help; order-automation <command> --help for one command
  --version              print the version

Exit codes: 0 done, 1 refused or failed (the message says why), 2 a mistake in the command line.
`;
}

function commandUsage(command: Command): string {
  const summary = command.summary[0]!.toUpperCase() + command.summary.slice(1);
  return `Usage: order-automation ${command.usage} [--database-url <url>] [--json]\n\n${summary}.\n${command.details}\n`;
}

function version(): string {
  // One level up from both src/cli.ts (tsx) and dist/cli.js (built).
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** migrate's options for adopting an app's database, from --adopt and its companions (added by the adopt change). */
function adoptOptions(values: Context['values']): Partial<MigrateOptions> {
  const text = (name: OptionName) => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const bookkeeping = text('bookkeeping');
  if (bookkeeping !== undefined && bookkeeping !== 'full' && bookkeeping !== 'automation') {
    throw new UsageError(`--bookkeeping takes full or automation, not "${bookkeeping}"`);
  }
  let stateCodes: MigrateOptions['stateCodes'];
  const codes = text('state-codes');
  if (codes !== undefined) {
    stateCodes = {};
    for (const [state, code] of codes.split(',').map(splitPair)) {
      if (!(orderStates as readonly string[]).includes(state)) {
        throw new UsageError(`--state-codes: unknown state "${state}"; the states are ${orderStates.join(', ')}`);
      }
      if (!/^-?\d+$/.test(code))
        throw new UsageError(`--state-codes: the code of ${state} must be a whole number, not "${code}"`);
      stateCodes[state as OrderState] = Number(code);
    }
  }
  return {
    adopt: values.adopt === true,
    createdAtColumn: text('created-at-column'),
    shippedAtColumn: text('shipped-at-column'),
    bookkeeping,
    stateCodes,
  };
}

function scheduleFromEnv(): boolean {
  const value = (process.env.ORDER_AUTOMATION_SCHEDULE ?? '').toLowerCase();
  if (value === 'off') return false;
  if (value === '' || value === 'on') return true;
  throw new UsageError(
    `ORDER_AUTOMATION_SCHEDULE must be "on" or "off", not "${process.env.ORDER_AUTOMATION_SCHEDULE}"`,
  );
}

function databaseUrl(flag: string | boolean | undefined): string {
  const url = typeof flag === 'string' ? flag : process.env.DATABASE_URL;
  if (!url)
    throw new UsageError(
      'no database given: pass --database-url postgres://user@host:port/database or set DATABASE_URL',
    );
  let protocol: string;
  try {
    protocol = new URL(url).protocol;
  } catch {
    protocol = '';
  }
  // Not echoed: it may hold a password.
  if (protocol !== 'postgres:' && protocol !== 'postgresql:') {
    throw new UsageError('the database URL must look like postgres://user:password@host:port/database');
  }
  return url;
}

function urlSource(argv: string[]): string {
  return argv.some((a) => a === '--database-url' || a.startsWith('--database-url='))
    ? 'given by --database-url'
    : 'from DATABASE_URL';
}

/** Passwords of every URL on the command line or in DATABASE_URL, so that no message shows them. */
function secretsOf(argv: string[]): string[] {
  const secrets: string[] = [];
  for (const candidate of [process.env.DATABASE_URL ?? '', ...argv.map((a) => a.replace(/^--[\w-]+=/, ''))]) {
    let password = '';
    try {
      password = new URL(candidate).password;
      if (password) secrets.push(password, decodeURIComponent(password));
    } catch {
      // Not a URL; or a password that is not valid percent-encoding, shown (if ever) as written.
      if (password) secrets.push(password);
    }
  }
  return secrets;
}

function noMore(args: string[]): void {
  if (args.length > 0) throw new UsageError(`unexpected argument "${args[0]}"`);
}

function wholeNumber(flag: string, text: string | boolean | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (typeof text !== 'string' || !/^\d+$/.test(text))
    throw new UsageError(`${flag} must be a whole number, not "${text}"`);
  return Number(text);
}

function timestamp(flag: string, text: string): Date {
  const ymd = /^(\d{4})-(\d\d)-(\d\d)/.exec(text);
  const at = ymd ? new Date(text) : new Date(Number.NaN);
  // JavaScript reads 2030-02-30 as March 2; PostgreSQL refuses it, and so do we.
  const day = Number(ymd?.[3]),
    month = Number(ymd?.[2]);
  const daysInMonth = ymd ? new Date(Date.UTC(Number(ymd[1]), month, 0)).getUTCDate() : 0;
  if (Number.isNaN(at.getTime()) || month < 1 || month > 12 || day < 1 || day > daysInMonth) {
    throw new UsageError(`${flag} must be an ISO 8601 time such as 2030-01-01T12:00:00Z, not "${text}"`);
  }
  return at;
}

function settingChanges(pairs: string[]): Partial<Settings> {
  const changes: Partial<Record<keyof Settings, string | number | null>> = {};
  for (const [name, value] of pairs.map(splitPair)) {
    const key = Object.hasOwn(settingKeys, name) ? settingKeys[name] : undefined;
    if (!key)
      throw new UsageError(`unknown setting "${name}"; the settings are ${Object.values(settingNames).join(', ')}`);
    if (key in changes) throw new UsageError(`${name} is given twice`);
    if (key === 'batchSize' && !/^[+-]?\d+$/.test(value)) {
      throw new InvalidSettingError(`batch_size must be a whole number, not "${value}". No setting was changed.`);
    }
    changes[key] = key === 'batchSize' ? Number(value) : nullableSettings.includes(key) && isOff(value) ? null : value;
  }
  return changes as Partial<Settings>;
}

function splitPair(pair: string): [string, string] {
  const eq = pair.indexOf('=');
  if (eq < 0) throw new UsageError(`expected <name>=<value>, not "${pair}"`);
  return [pair.slice(0, eq), pair.slice(eq + 1)];
}

function isOff(value: string): boolean {
  return value === 'off' || value === 'null';
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

/**
 * A message on one line whatever it echoes: a line break or a control character in an argument
 * (or in PostgreSQL's echo of a value) is shown escaped, so it cannot split the paragraph or drive
 * the terminal (ANSI escapes).
 */
function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) =>
    c === '\n' ? '\\n' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

function sentence(text: string): string {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

function time(at: Date): string {
  return at
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, ' UTC');
}

function relative(at: Date, now: Date): string {
  const seconds = Math.round((at.getTime() - now.getTime()) / 1000);
  const abs = Math.abs(seconds);
  const span =
    abs < 90
      ? `${abs} s`
      : abs < 90 * 60
        ? `${Math.round(abs / 60)} min`
        : abs < 48 * 3600
          ? `${Math.round(abs / 3600)} h`
          : `${Math.round(abs / 86400)} days`;
  return seconds >= 0 ? `in ${span}` : `${span} ago`;
}

/** Left-aligned columns, two spaces apart. */
function columns(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  return rows
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function settingsText(settings: Settings): string {
  return columns(
    Object.entries(settingNames).map(([key, name]) => [name, String(settings[key as keyof Settings] ?? 'off')]),
  );
}

function storesText(stores: StoreSettings[]): string {
  if (stores.length === 0) return 'no store overrides: every store follows the global settings';
  return columns([
    ['store', 'payment_timeout', 'receipt_timeout'],
    ...stores.map((s) => [s.storeId, s.paymentTimeout ?? '(global)', s.receiptTimeout ?? '(global)']),
  ]);
}

function eventLine(e: OrderEvent): string {
  return `${e.id}  ${time(e.at)}  ${e.orderId}  ${e.from ?? 'placed'} -> ${e.to ?? 'deleted'}  ${e.cause}${e.note ? `  ${e.note}` : ''}`;
}

function statusText(status: Status, now: Date): string {
  const jobs = status.jobs.map((job) => {
    const run = job.lastRun;
    const active =
      job.cronDatabase === null
        ? 'no (not scheduled)'
        : job.active === null
          ? 'unknown (pg_cron could not be read)'
          : `${job.active ? 'yes' : 'no (inactive in pg_cron)'}${job.cronDatabase === status.database ? '' : `, from database "${job.cronDatabase}"`}`;
    return columns([
      ['job', job.job],
      ['schedule', job.schedule],
      ['active', active],
      ['last run', run ? `${time(run.startedAt)} (${relative(run.startedAt, now)})` : 'never'],
      [
        'result',
        !run ? '-' : run.error !== null ? 'error' : run.finishedAt === null ? 'unfinished (running, or stopped)' : 'ok',
      ],
      ['processed', run ? String(run.processed) : '-'],
      ['failed', run ? String(run.failed) : '-'],
      ['error', run?.error ?? '-'],
      ['next run', job.nextRunAt ? `${time(job.nextRunAt)} (${relative(job.nextRunAt, now)})` : '-'],
      ['due now', job.dueNow === null ? '-' : String(job.dueNow)],
      ['held', job.held === null ? '-' : String(job.held)],
      ['next deadline', job.nextDeadline ? `${time(job.nextDeadline)} (${relative(job.nextDeadline, now)})` : '-'],
    ]);
  });
  return [
    `database ${status.database}`,
    ...jobs,
    `settings\n${settingsText(status.settings)}`,
    `store overrides\n${storesText(status.storeSettings)}`,
  ].join('\n\n');
}

/** Runs the command line `argv` (without node and the script); returns the exit code. */
export async function main(argv: string[], io: Io = process): Promise<number> {
  const secrets = secretsOf(argv);
  const redact = (text: string) => secrets.reduce((t, secret) => t.replaceAll(secret, '***'), text);
  const fail = (text: string) => io.stderr.write(`${redact(text)}\n`);
  try {
    const { values, positionals, tokens } = parseArgs({
      args: argv,
      options,
      allowPositionals: true,
      strict: false,
      tokens: true,
    });
    const [name, ...args] = positionals;
    // Own properties only: "__proto__", "constructor" or "toString" is no command.
    const command = name !== undefined && Object.hasOwn(commands, name) ? commands[name] : undefined;
    if (name !== undefined && !command)
      throw new UsageError(`unknown command "${name}"; the commands are ${Object.keys(commands).join(', ')}`);
    // Checked here rather than by strict parsing, for messages that say what is wrong with which option.
    for (const token of tokens) {
      if (token.kind !== 'option') continue;
      const spec = (options as Record<string, { type: string }>)[token.name];
      if (!spec) throw new UsageError(`unknown option ${token.rawName}`);
      if (
        spec.type === 'string' &&
        (token.value === undefined || (!token.inlineValue && token.value.startsWith('-')))
      ) {
        throw new UsageError(`option ${token.rawName} needs a value`);
      }
      if (spec.type === 'boolean' && token.value !== undefined)
        throw new UsageError(`option ${token.rawName} takes no value`);
      const option = token.name as OptionName;
      if (!globalOptions.includes(option) && !command?.options.includes(option)) {
        throw new UsageError(
          `option ${token.rawName} does not apply to ${name === undefined ? 'order-automation without a command' : name}`,
        );
      }
    }
    if (values.version) {
      io.stdout.write(`${version()}\n`);
      return 0;
    }
    if (values.help) {
      io.stdout.write(command ? commandUsage(command) : usage());
      return 0;
    }
    if (!command) throw new UsageError(`no command given; the commands are ${Object.keys(commands).join(', ')}`);
    const url = databaseUrl(values['database-url']);
    // Progress goes to stderr, so that stdout holds only the result (and stays valid JSON with --json).
    const { data, text } = await command.run({
      url,
      args,
      values,
      log: (line) => fail(line),
      print: (line) => io.stdout.write(`${line}\n`),
    });
    if (data !== undefined) io.stdout.write(`${values.json ? JSON.stringify(data, null, 2) : text}\n`);
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      fail(`order-automation: ${oneLine(sentence(error.message))}\nRun order-automation --help for usage.`);
      return 2;
    }
    if (error instanceof OrderAutomationError || error instanceof pg.DatabaseError) {
      // The server's own errors (a database not migrated, say) are not bugs of this program: no stack either.
      const hint =
        error.hint ??
        (error instanceof DatabaseUnreachableError
          ? `Check the server and the database URL (${urlSource(argv)}).`
          : undefined) ??
        (error instanceof pg.DatabaseError && ['3F000', '42P01', '42883'].includes(error.code ?? '')
          ? 'Is order-automation installed in this database? Install it with order-automation migrate.'
          : undefined);
      fail(`order-automation: ${oneLine(sentence(error.message))}${hint ? ` ${oneLine(sentence(hint))}` : ''}`);
      return 1;
    }
    fail(`order-automation: unexpected error\n${error instanceof Error ? error.stack : String(error)}`);
    return 1;
  }
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) process.exitCode = await main(process.argv.slice(2));
