// What the command prints: times, counts and tables as text. Nothing here talks to the database or
// judges an argument; it only renders what the module returned.
import type { OrderEvent, Settings, Status, StoreSettings } from '../index.js';
import { settingsDescriptor, type SettingName } from '../settings.js';

/**
 * Characters a terminal acts on rather than shows: C0 and C1 controls and DEL (ESC starts the
 * sequences that clear the screen, set the window title or write the clipboard with OSC 52; a line
 * break or a carriage return forges a line), Unicode line and paragraph separators, and the bidi
 * controls that reorder what is shown.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const terminalControls = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
/** The same, less the C0 controls: JSON.stringify escapes those in strings, and its own line breaks are layout. */
const controlsJsonLeaves = /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const shortEscapes: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
const unicodeEscape = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * Text on one line whatever it holds: a message that echoes an argument, or any text read from the
 * database (order ids, hold reasons, store ids, schedules, run errors are written by apps and admins).
 * Every character a terminal would act on is shown escaped (\n, \u001b), so it can neither split the
 * output into forged lines nor drive the terminal.
 */
export function oneLine(text: string): string {
  return text.replace(terminalControls, (c) => shortEscapes[c] ?? unicodeEscape(c));
}

/**
 * JSON of a result, exact: the same values parse back. JSON already escapes C0 controls; the other
 * characters a terminal acts on are escaped too (\u009b, \u2028), which JSON reads back the same.
 */
export function json(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(controlsJsonLeaves, unicodeEscape);
}

export function sentence(text: string): string {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

/** "a", "a and b", "a, b and c". */
export function listed(words: readonly string[]): string {
  return words.length < 2 ? words.join('') : `${words.slice(0, -1).join(', ')} and ${words.at(-1)}`;
}

export function time(at: Date): string {
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

/** Left-aligned columns, two spaces apart; every cell on one line (see oneLine). */
export function columns(cells: string[][]): string {
  const rows = cells.map((row) => row.map(oneLine));
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

export function settingsText(settings: Settings): string {
  return columns(
    (Object.keys(settingsDescriptor) as SettingName[]).map((key) => [
      settingsDescriptor[key].column,
      String(settings[key] ?? 'off'),
    ]),
  );
}

export function storesText(stores: StoreSettings[]): string {
  if (stores.length === 0) return 'no store overrides: every store follows the global settings';
  return columns([
    ['store', 'payment_timeout', 'receipt_timeout'],
    ...stores.map((s) => [s.storeId, s.paymentTimeout ?? '(global)', s.receiptTimeout ?? '(global)']),
  ]);
}

export function eventLine(e: OrderEvent): string {
  return `${e.id}  ${time(e.at)}  ${oneLine(e.orderId)}  ${e.from ?? 'placed'} -> ${e.to ?? 'deleted'}  ${oneLine(e.cause)}${e.note ? `  ${oneLine(e.note)}` : ''}`;
}

/** Events as a table; `header: false` for the pages after the first (each page is aligned on its own). */
export function eventsTable(events: OrderEvent[], header = true): string {
  if (events.length === 0) return 'no events';
  const rows = events.map((e) => [
    String(e.id),
    e.orderId,
    e.from ?? '-',
    e.to ?? '-',
    e.cause,
    time(e.at),
    e.note ?? '',
  ]);
  return columns(header ? [['id', 'order', 'from', 'to', 'cause', 'at', 'note'], ...rows] : rows);
}

/** How late an order was processed: milliseconds under a second, then seconds, then minutes. */
function lateness(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}

export function statusText(status: Status, now: Date): string {
  const jobs = status.jobs.map((job) => {
    const run = job.lastRun;
    const where =
      job.cronDatabase === null || job.cronDatabase === status.database ? '' : `, from database "${job.cronDatabase}"`;
    const active = {
      active: `yes${where}`,
      paused: `no (paused in pg_cron)${where}`,
      missing: `no (missing from pg_cron: order-automation migrate re-creates it)${where}`,
      'not scheduled': 'no (not scheduled)',
      unknown: 'unknown (pg_cron could not be read)',
    }[job.pgCron];
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
      [
        'failing',
        job.failing === null
          ? '-'
          : job.failing === 0 || !job.failingSince
            ? '0'
            : `${job.failing} since ${time(job.failingSince)} (${relative(job.failingSince, now)}; see order_automation.failing_order)`,
      ],
      ['next deadline', job.nextDeadline ? `${time(job.nextDeadline)} (${relative(job.nextDeadline, now)})` : '-'],
      ['worst lateness', job.worstLatenessMs === null ? '-' : `${lateness(job.worstLatenessMs)} (last 60 runs)`],
    ]);
  });
  return [
    `database ${oneLine(status.database)}`,
    ...jobs,
    `settings\n${settingsText(status.settings)}`,
    `store overrides\n${storesText(status.storeSettings)}`,
  ].join('\n\n');
}

/** The help of the whole command: every command's usage line and summary. */
export function usage(commands: readonly { usage: string; summary: string }[]): string {
  return `Usage: order-automation <command> [options]

Cancels unpaid orders past their payment deadline and confirms shipped orders past their receipt
deadline, inside PostgreSQL, on pg_cron's schedule.

Commands:
${commands.map((c) => `  ${c.usage}\n      ${c.summary}`).join('\n')}

Options of every command:
  --database-url <url>   postgres://user:password@host:port/database (default: $DATABASE_URL)
  --json                 print JSON instead of text
  -h, --help             this help; order-automation <command> --help for one command
  --version              print the version

Exit codes: 0 done, 1 refused or failed (the message says why), 2 a mistake in the command line.
`;
}

/** The help of one command: its usage line, summary and details. */
export function commandUsage(command: { usage: string; summary: string; details: string }): string {
  const summary = command.summary[0]!.toUpperCase() + command.summary.slice(1);
  return `Usage: order-automation ${command.usage} [--database-url <url>] [--json]\n\n${summary}.\n${command.details}\n`;
}
