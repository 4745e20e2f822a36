// The commands of order-automation, in the order --help lists them: what each takes and which
// exported function it calls. A thin shell over the module: the database judges, ../args.ts checks
// the words, ../output.ts renders. Jobs, settings and orders each have a file of their own.
import { getStatus, migrate } from '../../index.js';
import { noMore, type OptionName, scheduleFromEnv } from '../args.js';
import { statusText } from '../output.js';
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
  usage: 'migrate [--down [--yes]] [--no-schedule] [--verbose]',
  summary: 'install the package (or, with --down, remove it) and schedule its pg_cron jobs',
  details: `Applies every pending migration in one transaction; running it twice, or twice at once, does no harm.
  --down          revert every migration: removes the package's schema, tables and pg_cron jobs; when
                  the bookstore's tables or the order history hold rows, only with --yes
  --yes           confirm that --down drops those tables with their rows
  --verbose       also print node-pg-migrate's own lines (and, on a failure, the SQL that failed)
  --no-schedule   install without pg_cron jobs (same as ORDER_AUTOMATION_SCHEDULE=off); you then run
                  the automation yourself, e.g. with order-automation run cancel`,
  options: ['down', 'no-schedule', 'yes', 'verbose'],
  async run({ url, args, values, log }) {
    noMore(args); // "migrate down" is not --down: refuse it rather than migrate up
    const down = values.down === true;
    const result = await migrate(url, {
      direction: down ? 'down' : 'up',
      schedule: values['no-schedule'] !== true && scheduleFromEnv(),
      log,
      verbose: values.verbose === true,
      confirm: values.yes === true,
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
};

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
