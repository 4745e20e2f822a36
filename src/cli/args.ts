// The command line's words, judged before anything reaches the database: options and where they
// apply, the database URL (and the passwords no message may show), numbers, times, jobs, settings.
import type { parseArgs } from 'node:util';
import { InvalidSettingError } from '../errors.js';
import { settingsDescriptor, type SettingName, type Settings } from '../settings.js';
import { jobNames, jobs, type JobName } from '../types.js';

/** A mistake in the command line: exit code 2 and a pointer to --help. */
export class UsageError extends Error {}

export const options = {
  'database-url': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
  down: { type: 'boolean' },
  'no-schedule': { type: 'boolean' },
  adopt: { type: 'boolean' },
  'created-at-column': { type: 'string' },
  'shipped-at-column': { type: 'string' },
  bookkeeping: { type: 'string' },
  'state-codes': { type: 'string' },
  'as-of': { type: 'string' },
  'batch-size': { type: 'string' },
  order: { type: 'string' },
  after: { type: 'string' },
  limit: { type: 'string' },
  follow: { type: 'boolean', short: 'f' },
  yes: { type: 'boolean' },
  verbose: { type: 'boolean' },
} as const;
export type OptionName = keyof typeof options;
const globalOptions: OptionName[] = ['database-url', 'json', 'help', 'version'];

type Token = NonNullable<ReturnType<typeof parseArgs>['tokens']>[number];

/**
 * Checks every option of the command line (rather than strict parsing does) for messages that say
 * what is wrong with which option: unknown, missing or unexpected value, not one of this command's.
 */
export function checkOptions(tokens: Token[], commandName: string | undefined, commandOptions: OptionName[]): void {
  for (const token of tokens) {
    if (token.kind !== 'option') continue;
    const spec = (options as Record<string, { type: string }>)[token.name];
    if (!spec) throw new UsageError(`unknown option ${token.rawName}`);
    if (spec.type === 'string' && (token.value === undefined || (!token.inlineValue && token.value.startsWith('-')))) {
      throw new UsageError(`option ${token.rawName} needs a value`);
    }
    if (spec.type === 'boolean' && token.value !== undefined)
      throw new UsageError(`option ${token.rawName} takes no value`);
    const option = token.name as OptionName;
    if (!globalOptions.includes(option) && !commandOptions.includes(option)) {
      throw new UsageError(
        `option ${token.rawName} does not apply to ${commandName === undefined ? 'order-automation without a command' : commandName}`,
      );
    }
  }
}

export function databaseUrl(flag: string | boolean | undefined): string {
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

export function urlSource(argv: string[]): string {
  return argv.some((a) => a === '--database-url' || a.startsWith('--database-url='))
    ? 'given by --database-url'
    : 'from DATABASE_URL';
}

/** Passwords of every URL on the command line or in DATABASE_URL, so that no message shows them. */
export function secretsOf(argv: string[]): string[] {
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

export function scheduleFromEnv(): boolean {
  const value = (process.env.ORDER_AUTOMATION_SCHEDULE ?? '').toLowerCase();
  if (value === 'off') return false;
  if (value === '' || value === 'on') return true;
  throw new UsageError(
    `ORDER_AUTOMATION_SCHEDULE must be "on" or "off", not "${process.env.ORDER_AUTOMATION_SCHEDULE}"`,
  );
}

export function noMore(args: string[]): void {
  if (args.length > 0) throw new UsageError(`unexpected argument "${args[0]}"`);
}

export function wholeNumber(flag: string, text: string | boolean | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (typeof text !== 'string' || !/^\d+$/.test(text))
    throw new UsageError(`${flag} must be a whole number, not "${text}"`);
  return Number(text);
}

export function timestamp(flag: string, text: string): Date {
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

/** The short names of the jobs on the command line (cancel, confirm, ...), in the jobs' order. */
export const jobAliases: readonly string[] = jobNames.map((job) => jobs[job].alias);

/** The job a command-line word names: its short name, or (when `fullNames`) its name in the job table. */
export function jobNamed(word: string | undefined, { fullNames }: { fullNames: boolean }): JobName | undefined {
  return jobNames.find((job) => jobs[job].alias === word || (fullNames && job === word));
}

export function splitPair(pair: string): [string, string] {
  const eq = pair.indexOf('=');
  if (eq < 0) throw new UsageError(`expected <name>=<value>, not "${pair}"`);
  return [pair.slice(0, eq), pair.slice(eq + 1)];
}

export function isOff(value: string): boolean {
  return value === 'off' || value === 'null';
}

const settingByColumn = new Map(
  (Object.keys(settingsDescriptor) as SettingName[]).map((key) => [settingsDescriptor[key].column as string, key]),
);

/** `<column>=<value>` pairs as a change of settings: integers as numbers, off as NULL where a setting may be off. */
export function settingChanges(pairs: string[]): Partial<Settings> {
  const changes: Partial<Record<SettingName, string | number | null>> = {};
  for (const [name, value] of pairs.map(splitPair)) {
    const key = settingByColumn.get(name);
    if (!key)
      throw new UsageError(`unknown setting "${name}"; the settings are ${[...settingByColumn.keys()].join(', ')}`);
    if (key in changes) throw new UsageError(`${name} is given twice`);
    const { kind, nullable } = settingsDescriptor[key];
    if (nullable && isOff(value)) {
      changes[key] = null;
    } else if (kind === 'integer') {
      if (!/^[+-]?\d+$/.test(value))
        throw new InvalidSettingError(`${name} must be a whole number, not "${value}". No setting was changed.`);
      changes[key] = Number(value);
    } else {
      changes[key] = value;
    }
  }
  return changes as Partial<Settings>;
}
