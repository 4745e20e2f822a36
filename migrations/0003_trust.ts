// Trust: pg_cron's commands fixed by the package (no command column), the admin role's schedule
// control through the installer's own routines, the jobs' causes claimed (never taken from a setting
// a caller controls), best-effort reminders, and every right granted by name.
import type { MigrationBuilder } from 'node-pg-migrate';
import { adopting, adoptionRemoved } from './lib/adoption.js';
import { apply, previous } from './snapshots/index.js';

/** What this release changed in the order_automation schema's own tables (also applied by an adoption). */
export const trustSchemaChanges = `
    alter table order_automation.job drop column command,
      add constraint "schedule must be a pg_cron schedule, e.g. */5 * * * *" check (schedule ~ '^[0-9A-Za-z*/,@$ -]{1,100}$');
    comment on table order_automation.job is
      'The scheduled jobs of the package: cron schedule, paused or not, and where pg_cron runs it (NULL: not scheduled). What pg_cron runs is never read from here: order_automation.job_command() builds it from the job''s name. Only the installing role writes this table; the admin role changes a schedule through set_schedule()';

    alter table order_automation.order_failure alter column order_id drop not null, add column step text;
    comment on column order_automation.order_failure.step is
      'NULL: the job''s own work on the order; remind_due_soon: a reminder that could not be written (order_id NULL: the whole step failed)';

    create table order_automation.job_claim (
      xid xid8 primary key,
      cause text not null
    );
    comment on table order_automation.job_claim is
      'The transaction of a job of the package at work and the cause it records; written only by the package''s own routines, empty between their transactions';

`;

export async function up(pgm: MigrationBuilder): Promise<void> {
  // An adopted database gets this release from 0005_adopt, which installs onto the app's tables.
  if (await adopting(pgm)) return;
  pgm.sql(trustSchemaChanges);
  pgm.sql(`
    -- Signatures and result types that change: drop by the full old signature, then create.
    drop function order_automation.remind_due_soon(text, timestamptz);
    drop function order_automation.job_status(timestamptz);
  `);
  pgm.sql(apply('0003_trust'));
  pgm.sql('select order_automation.install_schedule()');
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  // An adopted database: 0005_adopt's down has removed everything the package added.
  if (await adoptionRemoved(pgm)) return;
  pgm.sql(`
    drop function order_automation.job_command(text), order_automation.cron_database(),
      order_automation.claim_cause(text), order_automation.pg_cron_jobs(),
      order_automation.write_reminders(smallint, text[]),
      order_automation.remind_due_soon(text, timestamptz, bigint, integer),
      order_automation.job_status(timestamptz);
    drop table order_automation.job_claim;

    delete from order_automation.order_failure where order_id is null;
    alter table order_automation.order_failure drop column step, alter column order_id set not null;

    -- Qualified: a down runs with the session's search_path, where another role may have planted a
    -- better-matching public.format(text, text) for the installer to run.
    alter table order_automation.job add column command text,
      drop constraint "schedule must be a pg_cron schedule, e.g. */5 * * * *";
    update order_automation.job set command = pg_catalog.format('CALL order_automation.%s()', job);
    alter table order_automation.job alter column command set not null;
    comment on table order_automation.job is
      'The scheduled jobs of the package: the command pg_cron runs, its cron schedule, and the database whose pg_cron runs it (NULL: not scheduled)';
  `);
  // The previous release's versions of the routines this one changed, then its privileges.
  pgm.sql(previous('0003_trust'));
  pgm.sql('select order_automation.install_schedule()');
}
