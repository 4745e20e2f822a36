// The commands about jobs: run one now, change or pause its schedule. Which jobs exist comes from
// the job list of ../../types.ts; what running each one means is in jobRuns below.
import {
  cancelExpiredOrders,
  confirmShippedOrders,
  getStatus,
  jobNames,
  pauseJob,
  purgeCancelledOrders,
  purgeHistory,
  resumeJob,
  setSchedule,
  type JobName,
  type RunOptions,
} from '../../index.js';
import { jobs } from '../../types.js';
import { jobAliases, jobNamed, noMore, timestamp, UsageError, wholeNumber } from '../args.js';
import { columns, oneLine, plural, time } from '../output.js';
import type { Command, Result } from './index.js';

/** What `run <job>` does for each job, and says it did; keyed by JobName, so a job without an entry does not compile. */
const jobRuns: Record<JobName, { does: string; run(url: string, options: RunOptions): Promise<Result> }> = {
  cancel_expired_orders: {
    does: 'cancels every unpaid order past its payment deadline',
    async run(url, options) {
      const data = await cancelExpiredOrders(url, options);
      return { data, text: `cancelled ${plural(data.cancelled, 'order')}` };
    },
  },
  confirm_shipped_orders: {
    does: 'marks received every shipped order past its receipt deadline',
    async run(url, options) {
      const data = await confirmShippedOrders(url, options);
      return { data, text: `confirmed ${plural(data.confirmed, 'order')}` };
    },
  },
  purge_cancelled_orders: {
    does: 'deletes cancelled orders older than purge_cancelled_after',
    async run(url, options) {
      const data = await purgeCancelledOrders(url, options);
      return { data, text: `purged ${plural(data.purged, 'cancelled order')}` };
    },
  },
  purge_history: {
    does: 'deletes the run log older than history_retention',
    async run(url, options) {
      // purge_history keeps history_retention back from now: a time or a batch size would be ignored.
      if (options.asOf !== undefined || options.batchSize !== undefined) {
        throw new UsageError('run purge-history takes neither --as-of nor --batch-size: it keeps history_retention');
      }
      const data = await purgeHistory(url);
      return { data, text: `purged ${plural(data.purged, 'history row')}` };
    },
  },
};

export const runCommand: Command = {
  usage: `run ${jobAliases.join('|')} [--as-of <time>] [--batch-size <n>]`,
  summary: 'run one job now: cancel unpaid orders past their payment deadline, confirm shipped ones, purge',
  details: `${columns(jobNames.map((job) => [`  run ${jobs[job].alias}`, jobRuns[job].does]))}
Prints how many.
  --as-of <time>     process what is due at this ISO 8601 time, e.g. 2030-01-01T12:00:00Z (default: now)
  --batch-size <n>   orders per batch and commit (default: the batch_size setting)`,
  options: ['as-of', 'batch-size'],
  async run({ url, args, values }) {
    const [which, ...extra] = args;
    const job = jobNamed(which, { fullNames: false });
    if (job === undefined) {
      throw new UsageError(`run takes ${jobAliases.join(', ')}${which === undefined ? '' : `, not "${which}"`}`);
    }
    noMore(extra);
    const asOf = values['as-of'] === undefined ? undefined : timestamp('--as-of', String(values['as-of']));
    const batchSize = wholeNumber('--batch-size', values['batch-size']);
    return jobRuns[job].run(url, { asOf, batchSize });
  },
};

export const scheduleCommand: Command = {
  usage: 'schedule set <job> <cron> | schedule pause <job> | schedule resume <job>',
  summary: 'change when pg_cron runs a job, or pause and resume it',
  details: `Jobs: ${jobAliases.join(', ')} (or their full names). Cron syntax as pg_cron reads it, in UTC,
e.g. order-automation schedule set cancel '*/5 * * * *'. An invalid schedule is refused and nothing changes.`,
  options: [],
  async run({ url, args }) {
    const [action, name, ...rest] = args;
    if (action !== 'set' && action !== 'pause' && action !== 'resume') {
      throw new UsageError(`schedule takes set, pause or resume${action === undefined ? '' : `, not "${action}"`}`);
    }
    const job = jobNamed(name, { fullNames: true });
    if (job === undefined) throw new UsageError(`schedule ${action} needs a job: ${jobAliases.join(', ')}`);
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
      text: `${job}: ${oneLine(status.schedule)}, ${status.pgCron === 'active' ? `active, next run ${status.nextRunAt ? time(status.nextRunAt) : '-'}` : status.pgCron}`,
    };
  },
};
