// When a cron schedule fires next: the five-field syntax pg_cron 1.4 accepts (minute hour day month
// weekday; numbers, *, ranges, steps, lists; @hourly-style names). Times are in UTC, as pg_cron's.

const fields = [
  { min: 0, max: 59 },
  { min: 0, max: 23 },
  { min: 1, max: 31 },
  { min: 1, max: 12 },
  { min: 0, max: 7 },
] as const;

const named: Record<string, string> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

function parseField(text: string, { min, max }: { min: number; max: number }): Set<number> | undefined {
  const values = new Set<number>();
  for (const part of text.split(',')) {
    const match = /^(\*|\d+)(?:-(\d+))?(?:\/(\d+))?$/.exec(part);
    if (!match) return undefined;
    const from = match[1] === '*' ? min : Number(match[1]);
    const to = match[2] !== undefined ? Number(match[2]) : match[1] === '*' || match[3] !== undefined ? max : from;
    const step = match[3] !== undefined ? Number(match[3]) : 1;
    if (from < min || to > max || from > to || step < 1) return undefined;
    for (let v = from; v <= to; v += step) values.add(v);
  }
  return values;
}

/** The next minute after `from` at which `schedule` fires, or null when it is not five-field cron syntax. */
export function nextFireTime(schedule: string, from: Date = new Date()): Date | null {
  const parts = ((Object.hasOwn(named, schedule.trim()) ? named[schedule.trim()] : undefined) ?? schedule)
    .trim()
    .split(/\s+/);
  if (parts.length !== 5) return null;
  const sets = parts.map((p, i) => parseField(p, fields[i]!));
  if (sets.some((s) => s === undefined)) return null;
  const [minutes, hours, days, months, weekdays] = sets as Set<number>[];
  if (weekdays!.has(7)) weekdays!.add(0);
  // Cron's rule: when both day fields are restricted, either may match.
  const anyDay = parts[2] === '*',
    anyWeekday = parts[4] === '*';
  const t = new Date(from.getTime());
  t.setUTCSeconds(0, 0);
  for (let i = 0; i < 366 * 24 * 60; i++) {
    t.setUTCMinutes(t.getUTCMinutes() + 1);
    const dayOk =
      anyDay && anyWeekday
        ? true
        : anyDay
          ? weekdays!.has(t.getUTCDay())
          : anyWeekday
            ? days!.has(t.getUTCDate())
            : days!.has(t.getUTCDate()) || weekdays!.has(t.getUTCDay());
    if (minutes!.has(t.getUTCMinutes()) && hours!.has(t.getUTCHours()) && months!.has(t.getUTCMonth() + 1) && dayOk) {
      return new Date(t.getTime());
    }
  }
  return null;
}
