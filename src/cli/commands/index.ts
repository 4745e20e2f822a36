// The commands of order-automation, in the order --help lists them: what each takes and which
// exported function it calls. A thin shell over the module: the database judges, ../args.ts checks
// the words, ../output.ts renders. Jobs, settings and orders each have a file of their own.
import { getStatus, migrate, type MigrateOptions, orderStates, type OrderState } from '../../index.js';
import { noMore, type OptionName, scheduleFromEnv, splitPair, UsageError } from '../args.js';
import { oneLine, statusText } from '../output.js';
import { doctorCommand } from './doctor.js';
import { runCommand, scheduleCommand } from './jobs.js';
import { eventsCommand, holdCommand, releaseCommand } from './orders.js';
import { settingsCommand, storeSettingsCommand } from './settings.js';

export interface Context {
  url: string;
  args: string[];
  values: Partial<Record<OptionName, string | boolean>>;
  log: (line: string) => void;
  /** A line of output as it happens (events --follow). */
  print: (line: string) => void;
}

/** A command's result as data (printed by --json) and as text. */
export interface Result {
  data: unknown;
  text: string;
  /** Default 0; doctor's 1 says "not all is well" after printing its report. */
  exitCode?: number;
}

export interface Command {
  usage: string;
  summary: string;
  /** What `<command> --help` adds to the usage line. */
  details: string;
  options: OptionName[];
  run(context: Context): Promise<Result>;
}

export const migrateCommand: Command = {
  usage:
    'migrate [--down [--yes]] [--no-schedule] [--verbose] [--adopt [--created-at-column <col>] [--shipped-at-column <col>]] [--bookkeeping full|automation] [--state-codes <state>=<code>,...]',
  summary: 'install the package (or, with --down, remove it) and schedule its pg_cron jobs',
  details: `Applies every pending migration in one transaction; running it twice, or twice at once, does no harm.
  --down          revert every migration: removes the package's schema, tables and pg_cron jobs (an
                  adopted app's own tables and rows stay); when a table it drops holds rows, only with --yes
  --yes           confirm that --down drops the package's tables with their rows
  --verbose       also print node-pg-migrate's own lines (and, on a failure, the SQL that failed)
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
  options: [
    'down',
    'no-schedule',
    'yes',
    'verbose',
    'adopt',
    'created-at-column',
    'shipped-at-column',
    'bookkeeping',
    'state-codes',
  ],
  async run({ url, args, values, log }) {
    noMore(args); // "migrate down" is not --down: refuse it rather than migrate up
    const down = values.down === true;
    const result = await migrate(url, {
      direction: down ? 'down' : 'up',
      schedule: values['no-schedule'] !== true && scheduleFromEnv(),
      log,
      ...adoptOptions(values),
      verbose: values.verbose === true,
      confirm: values.yes === true,
    });
    const lines = result.migrations.map((name) => `${down ? 'reverted' : 'applied'} ${name}`);
    if (lines.length === 0) lines.push(down ? 'nothing to revert' : 'already up to date: no migration to apply');
    if (!down) {
      lines.push(
        result.scheduledIn === null
          ? 'the jobs are not scheduled in pg_cron: run them with order-automation run cancel|confirm, or run order-automation migrate again without --no-schedule to schedule them'
          : `the jobs are scheduled by pg_cron in database "${oneLine(result.scheduledIn)}"`,
      );
    }
    return { data: result, text: lines.join('\n') };
  },
};

/** migrate's options for adopting an app's database, from --adopt and its companions. */
function adoptOptions(values: Context['values']): Partial<MigrateOptions> {
  const text = (name: OptionName) => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const bookkeeping = text('bookkeeping');
  if (bookkeeping !== undefined && bookkeeping !== 'full' && bookkeeping !== 'automation') {
    throw new UsageError(`--bookkeeping takes full or automation, not "${oneLine(bookkeeping)}"`);
  }
  let stateCodes: MigrateOptions['stateCodes'];
  const codes = text('state-codes');
  if (codes !== undefined) {
    stateCodes = {};
    for (const [state, code] of codes.split(',').map(splitPair)) {
      if (!(orderStates as readonly string[]).includes(state)) {
        throw new UsageError(
          `--state-codes: unknown state "${oneLine(state)}"; the states are ${orderStates.join(', ')}`,
        );
      }
      if (!/^-?\d+$/.test(code))
        throw new UsageError(`--state-codes: the code of ${state} must be a whole number, not "${oneLine(code)}"`);
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

export const statusCommand: Command = {
  usage: 'status',
  summary: 'each job: schedule, active, last run, orders due now, next deadline; and the settings',
  details: 'Shows what pg_cron runs and how the last runs went.',
  options: [],
  async run({ url }) {
    const status = await getStatus(url);
    return { data: status, text: statusText(status, new Date()) };
  },
};

export const commands: Record<string, Command> = {
  migrate: migrateCommand,
  status: statusCommand,
  run: runCommand,
  settings: settingsCommand,
  'store-settings': storeSettingsCommand,
  hold: holdCommand,
  release: releaseCommand,
  schedule: scheduleCommand,
  events: eventsCommand,
  doctor: doctorCommand,
};
