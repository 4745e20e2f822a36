// pg_cron's schedule syntax, read the way pg_cron reads it, and when a schedule fires next. Five
// fields (minute hour day month weekday: numbers, *, ranges, steps, lists; month and weekday names;
// @hourly-style words) in every pg_cron; from pg_cron 1.5 also '[1-59] seconds' and '$' (the last day
// of the month) as the day. Times are in UTC, as pg_cron's.
import { type Db, query } from './db.js';

interface Field {
  min: number;
  max: number;
  /** Names pg_cron takes for values, case-insensitive: index + min is the value. */
  names?: readonly string[];
}

const months = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'] as const;
// Vixie cron's list: Sunday is both 0 and 7.
const weekdays = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;

const fields: readonly Field[] = [
  { min: 0, max: 59 },
  { min: 0, max: 23 },
  { min: 1, max: 31 },
  { min: 1, max: 12, names: months },
  { min: 0, max: 7, names: weekdays },
];

// Lower case only, as pg_cron compares them. @reboot is left out: it never fires on a schedule.
const named: Record<string, string> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

/** A schedule as pg_cron reads it: fired on calendar matches, or every few seconds. */
export type Schedule =
  | {
      kind: 'cron';
      minutes: Set<number>;
      hours: Set<number>;
      days: Set<number>;
      months: Set<number>;
      weekdays: Set<number>;
      /** '$' as the day: the last day of each month (pg_cron 1.5 and later). */
      lastDay: boolean;
      /** A day field (or weekday field) starting with '*': the other one alone decides (cron's rule). */
      anyDay: boolean;
      anyWeekday: boolean;
    }
  | { kind: 'seconds'; seconds: number };

function value(text: string, field: Field): number | undefined {
  if (/^\d+$/.test(text)) return Number(text);
  const index = field.names?.indexOf(text.toLowerCase() as never) ?? -1;
  return index < 0 ? undefined : index + field.min;
}

function parseField(text: string, field: Field): Set<number> | undefined {
  const values = new Set<number>();
  for (const part of text.split(',')) {
    // range = * | value | value-value, then an optional /step; a step needs a range ("1/5" is refused).
    const match = /^(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:\/(\d+))?$/i.exec(part);
    if (!match) return undefined;
    const [, star, first, last, stepText] = match;
    if (!star && last === undefined && stepText !== undefined) return undefined;
    const from = star ? field.min : value(first!, field);
    const to = star ? field.max : last !== undefined ? value(last, field) : from;
    const step = stepText === undefined ? 1 : Number(stepText);
    if (from === undefined || to === undefined || from < field.min || to > field.max || from > to || step < 1) {
      return undefined;
    }
    for (let v = from; v <= to; v += step) values.add(v);
  }
  return values;
}

/** Reads a schedule as pg_cron 1.5 and later do (the widest syntax); undefined when it is none. */
export function parseSchedule(schedule: string): Schedule | undefined {
  // pg_cron 1.5: ' %u second' or ' %u seconds', any case, 1 to 59.
  const seconds = /^\s*(\d+)\s*seconds?\s*$/i.exec(schedule);
  if (seconds) {
    const n = Number(seconds[1]);
    return n >= 1 && n <= 59 ? { kind: 'seconds', seconds: n } : undefined;
  }
  const trimmed = schedule.trim();
  const parts = (Object.hasOwn(named, trimmed) ? named[trimmed]! : trimmed).split(/\s+/);
  if (parts.length !== 5) return undefined;
  const lastDay = parts[2] === '$';
  const sets = parts.map((p, i) => (i === 2 && lastDay ? new Set<number>() : parseField(p, fields[i]!)));
  if (sets.some((s) => s === undefined)) return undefined;
  const [minuteSet, hourSet, daySet, monthSet, weekdaySet] = sets as Set<number>[];
  if (weekdaySet!.has(7)) weekdaySet!.add(0);
  return {
    kind: 'cron',
    minutes: minuteSet!,
    hours: hourSet!,
    days: daySet!,
    months: monthSet!,
    weekdays: weekdaySet!,
    lastDay,
    anyDay: parts[2]!.startsWith('*'),
    anyWeekday: parts[4]!.startsWith('*'),
  };
}

/** What a pg_cron version reads beyond five fields: seconds schedules and '$' came with 1.5. */
export function cronDialect(pgCronVersion: string | null): { seconds: boolean; lastDay: boolean } {
  const [major = 0, minor = 0] = (pgCronVersion ?? '').split(/[.-]/).map(Number);
  const newer = major > 1 || (major === 1 && minor >= 5);
  return { seconds: newer, lastDay: newer };
}

/**
 * Why the pg_cron of `pgCronVersion` would refuse `schedule` (or why it makes no sense for a job);
 * null when it accepts it. Without a version, only what every pg_cron reads is accepted.
 */
export function scheduleProblem(schedule: string, pgCronVersion: string | null = null): string | null {
  const parsed = parseSchedule(schedule);
  const server = pgCronVersion === null ? 'this server has no pg_cron' : `this server has pg_cron ${pgCronVersion}`;
  if (!parsed) {
    return `"${schedule}" is not a cron schedule pg_cron accepts (five fields: minute hour day month weekday, e.g. "*/5 * * * *"; from pg_cron 1.5 also "30 seconds")`;
  }
  const dialect = cronDialect(pgCronVersion);
  if (parsed.kind === 'seconds' && !dialect.seconds) {
    return `"${schedule}" needs pg_cron 1.5 or later and ${server}: use a schedule of whole minutes, e.g. "* * * * *"`;
  }
  if (parsed.kind === 'cron' && parsed.lastDay && !dialect.lastDay) {
    return `"${schedule}" needs pg_cron 1.5 or later for "$" (the last day of the month) and ${server}`;
  }
  return null;
}

function daysInMonth(t: Date): number {
  return new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth() + 1, 0)).getUTCDate();
}

/**
 * The next time after `from` at which `schedule` fires, or null when it is not a schedule pg_cron
 * reads (or never fires within a year). A seconds schedule starts its job that long after the
 * previous start (never while a run is still going): the time given is the latest next start
 * counted from `from`, not a calendar tick.
 */
export function nextFireTime(schedule: string, from: Date = new Date()): Date | null {
  const parsed = parseSchedule(schedule);
  if (!parsed) return null;
  if (parsed.kind === 'seconds') return new Date(from.getTime() + parsed.seconds * 1000);
  const { minutes, hours, days, months: monthSet, weekdays: weekdaySet, lastDay, anyDay, anyWeekday } = parsed;
  const t = new Date(from.getTime());
  t.setUTCSeconds(0, 0);
  for (let i = 0; i < 366 * 24 * 60; i++) {
    t.setUTCMinutes(t.getUTCMinutes() + 1);
    const dayMatch = lastDay ? t.getUTCDate() === daysInMonth(t) : days.has(t.getUTCDate());
    const weekdayMatch = weekdaySet.has(t.getUTCDay());
    // Cron's rule: when either day field starts with '*', both must match; otherwise either may.
    const dayOk = anyDay || anyWeekday ? dayMatch && weekdayMatch : dayMatch || weekdayMatch;
    if (minutes.has(t.getUTCMinutes()) && hours.has(t.getUTCHours()) && monthSet.has(t.getUTCMonth() + 1) && dayOk) {
      return new Date(t.getTime());
    }
  }
  return null;
}

/** The pg_cron version installed on `db`'s server (whose library reads the schedules); null without one. */
export async function serverPgCronVersion(db: Db): Promise<string | null> {
  const rows = await query<{ version: string }>(
    db,
    `select default_version as version from pg_catalog.pg_available_extensions where name operator(pg_catalog.=) 'pg_cron'`,
  );
  return rows[0]?.version ?? null;
}
