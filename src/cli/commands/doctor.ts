// The doctor command: what doctor() found, one line per check, each problem followed by the lines
// that fix it; exit code 1 unless all is well.
import { doctor, type DoctorReport } from '../../doctor.js';
import { noMore } from '../args.js';
import { oneLine, plural } from '../output.js';
import type { Command } from './index.js';

const label = { ok: 'ok', note: 'note', problem: 'PROBLEM' } as const;

export function doctorText(report: DoctorReport): string {
  const installer = report.installer === report.role ? '' : ` (installed by "${report.installer}")`;
  const lines = [`database "${report.database}", checked as role "${report.role}"${installer}`, ''];
  for (const check of report.checks) {
    lines.push(`${label[check.status].padEnd(8)} ${oneLine(check.summary)}`);
    if (check.fix && check.status !== 'ok') {
      lines.push(`${' '.repeat(9)}${oneLine(check.fix.where)}:`);
      for (const line of check.fix.lines) lines.push(`${' '.repeat(11)}${oneLine(line)}`);
    }
  }
  const problems = report.checks.filter((c) => c.status === 'problem').length;
  lines.push(
    '',
    problems === 0
      ? 'All is well.'
      : `${plural(problems, 'problem')}: run the lines given, then order-automation doctor again.`,
  );
  return lines.join('\n');
}

export const doctorCommand: Command = {
  usage: 'doctor [--no-schedule]',
  summary: "check pg_cron, the installing role's privileges, the install, the jobs and the settings",
  details: `Prints each problem with the exact lines to run (GRANT ..., CREATE EXTENSION ..., postgresql.conf).
Only reads. Exit code 0 only when all is well.
  --no-schedule   the package runs without pg_cron here: leave pg_cron out of the checks`,
  options: ['no-schedule'],
  async run({ url, args, values }) {
    noMore(args);
    const report = await doctor(url, { schedule: values['no-schedule'] !== true });
    return { data: report, text: doctorText(report), exitCode: report.ok ? 0 : 1 };
  },
};
