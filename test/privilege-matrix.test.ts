// The privilege matrix, read from the catalog: every schema, table, view, sequence and routine of the
// package and the five shop tables, for PUBLIC, a stranger login, the app role and the admin role,
// against every privilege that applies to it. The expected table below is the decision record: an
// object added later without a row here, or a right granted without changing its row, fails.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { admin as asSuperuser, createTestDatabase, type TestDatabase } from './helpers.js';

/** Effective rights (membership included: the admin role is a member of the app role), space-separated. */
interface Decision {
  public?: string;
  stranger?: string;
  app?: string;
  admin?: string;
  /** Runs as the package's owner (SECURITY DEFINER). */
  definer?: true;
}

const lifecycle: Decision = { app: 'EXECUTE', admin: 'EXECUTE' };
const automation: Decision = { admin: 'EXECUTE' };
const ownerOnly: Decision = {};
const trigger: Decision = { definer: true };

const expected: Record<string, Decision> = {
  'schema order_automation': { app: 'USAGE', admin: 'USAGE' },

  // The package's tables: the app reads the history and the settings; the admin also changes the
  // settings and writes the run log its runs keep; nobody but the owner writes the jobs, the
  // history or the claims.
  'table order_automation.settings': { app: 'SELECT', admin: 'SELECT UPDATE' },
  'table order_automation.store_settings': { app: 'SELECT', admin: 'DELETE INSERT SELECT UPDATE' },
  'table order_automation.order_event': { app: 'SELECT', admin: 'SELECT' },
  'table order_automation.run': { admin: 'DELETE INSERT SELECT UPDATE' },
  'table order_automation.order_failure': { admin: 'INSERT SELECT' },
  // Read by the due scans and the status; written only by the owner's process_batch and retry_failing_batch.
  'table order_automation.failing_order': { admin: 'SELECT' },
  'table order_automation.job': { admin: 'SELECT' },
  'table order_automation.job_claim': ownerOnly,
  // The app's tables an adoption kept (empty on a fresh install): the installer's alone.
  'table order_automation.adopted_table': ownerOnly,
  'sequence order_automation.order_event_id_seq': ownerOnly,
  'sequence order_automation.run_id_seq': ownerOnly,
  'sequence order_automation.order_failure_id_seq': ownerOnly,

  // The shop's tables: the app writes them; the lifecycle triggers do the bookkeeping as the owner.
  'table public."user"': { app: 'INSERT SELECT UPDATE', admin: 'INSERT SELECT UPDATE' },
  'table public.user_store': { app: 'INSERT SELECT UPDATE', admin: 'INSERT SELECT UPDATE' },
  'table public.store': { app: 'INSERT SELECT UPDATE', admin: 'INSERT SELECT UPDATE' },
  'table public.new_order': { app: 'DELETE INSERT SELECT UPDATE', admin: 'DELETE INSERT SELECT UPDATE' },
  'table public.new_order_detail': { app: 'DELETE INSERT SELECT UPDATE', admin: 'DELETE INSERT SELECT UPDATE' },

  // The lifecycle, for the app (and so the admin).
  'function order_automation.place_order(text,text,text,jsonb)': lifecycle,
  'function order_automation.pay_order(text)': lifecycle,
  'function order_automation.ship_order(text)': lifecycle,
  'function order_automation.confirm_receipt(text)': lifecycle,
  'function order_automation.cancel_order(text)': lifecycle,
  // Any cause but the jobs' own: current_cause() refuses those without the jobs' claim.
  'function order_automation.set_order_state(text,smallint,text)': lifecycle,
  // Names a state code in the refusals of the lifecycle functions above, which run as the caller.
  'function order_automation.state_label(integer)': lifecycle,
  // These four run with the caller's rights too, so a shop's row-level security binds them; their
  // events are written by the owner's trigger (tg_new_order__note).
  'function order_automation.payment_started(text,interval)': lifecycle,
  'function order_automation.extend_receipt(text,interval)': lifecycle,
  'function order_automation.hold(text,text)': lifecycle,
  'function order_automation.release(text)': lifecycle,

  // The automation, for the admin: the procedures commit, so they run with the caller's rights and
  // it needs EXECUTE on what they call. process_orders and remind_due_soon run as the owner: the
  // first to claim the jobs' causes (re-checking the state it moves orders from), the second to
  // write reminders into the history.
  'procedure order_automation.cancel_expired_orders(timestamp with time zone,integer,bigint)': automation,
  'procedure order_automation.confirm_shipped_orders(timestamp with time zone,integer,bigint)': automation,
  'procedure order_automation.purge_cancelled_orders(timestamp with time zone,integer,bigint)': automation,
  'procedure order_automation.purge_history(bigint)': automation,
  'procedure order_automation.run_due_orders(text,timestamp with time zone,integer,bigint)': automation,
  'procedure order_automation.run_due_orders_in_batches(text[],bigint[],timestamp with time zone,integer,timestamp with time zone,boolean,text,text,text)':
    automation,
  'procedure order_automation.run_due_orders_until_tick(text,integer,bigint)': automation,
  'function order_automation.run_waits(timestamp with time zone)': automation,
  'function order_automation.waiter_plan()': automation,
  'function order_automation.start_runs(text[],integer)': automation,
  'function order_automation.finish_runs(bigint[],text,text)': automation,
  'function order_automation.waiter_lock_ours(integer)': automation,
  'function order_automation.successor_waiting(integer)': automation,
  'function order_automation.due_orders(text,timestamp with time zone,integer,text[])': automation,
  'function order_automation.process_due_batch(text,timestamp with time zone,integer,bigint,text[])': automation,
  'function order_automation.process_orders(text,text[])': { ...automation, definer: true },
  // As the owner: only the package's routines write failing_order (each re-checks the orders' state).
  'function order_automation.process_batch(text,text[],bigint,boolean)': { ...automation, definer: true },
  'function order_automation.retry_failing_batch(text,timestamp with time zone,integer,bigint)': {
    ...automation,
    definer: true,
  },
  'function order_automation.remind_due_soon(text,timestamp with time zone,bigint,integer)': {
    ...automation,
    definer: true,
  },
  // Status and schedule control: the installer's pg_cron jobs read and changed as the installer.
  'function order_automation.cron_jobname(text)': automation,
  'function order_automation.cron_schema()': automation,
  'function order_automation.cron_database()': automation,
  'function order_automation.job_status(timestamp with time zone)': automation,
  'function order_automation.pg_cron_jobs()': { ...automation, definer: true },
  'function order_automation.set_schedule(text,text,boolean)': { ...automation, definer: true },

  // The owner's alone: installing the schedule, what pg_cron runs, the causes' claims, the helpers
  // the owner's routines call, and the trigger functions (fired, never called).
  'function order_automation.schedule_jobs()': ownerOnly,
  'function order_automation.unschedule_jobs()': ownerOnly,
  'function order_automation.install_schedule()': ownerOnly,
  'function order_automation.pg_cron_problem()': ownerOnly,
  'function order_automation.job_command(text)': ownerOnly,
  'function order_automation.claim_cause(text)': ownerOnly,
  'function order_automation.current_cause()': ownerOnly,
  'function order_automation.write_reminders(smallint,text[])': ownerOnly,
  'function order_automation.move_stock(text[],text[],integer[],text[])': ownerOnly,
  'function order_automation.tg_settings__keep_one_row()': ownerOnly,
  // Settings triggers: a change of the state codes rebuilds the partial indexes, as the owner.
  'function order_automation.tg_settings__state_codes()': trigger,
  'function order_automation.index_state_codes()': { definer: true },
  // The bookkeeping of the package's own jobs, called by the lifecycle triggers as the owner.
  'function order_automation.book_job_outcomes(text,text[])': ownerOnly,
  'function order_automation.move_money(text[],bigint[],text[])': ownerOnly,
  'function order_automation.restock(text[])': ownerOnly,
  'function order_automation.seller_credits(text[])': ownerOnly,
  'function order_automation.tg_new_order__keep_outcome()': trigger,
  'function order_automation.tg_new_order__before_insert()': trigger,
  'function order_automation.tg_new_order__keep_identity()': trigger,
  'function order_automation.tg_new_order__stamp()': trigger,
  'function order_automation.tg_new_order__after_insert()': trigger,
  'function order_automation.tg_new_order__after_update()': trigger,
  'function order_automation.tg_new_order__after_delete()': trigger,
  'function order_automation.tg_new_order__note()': trigger,
  'function order_automation.tg_new_order_detail__reserve()': trigger,
  // One statement changing orders and their lines: the triggers' journal, kept as the owner.
  'function order_automation.tg_statement__open()': trigger,
  'function order_automation.count_statements(integer,integer)': ownerOnly,
  'function order_automation.close_statement(text)': ownerOnly,
  'function order_automation.open_statements()': ownerOnly,
  'function order_automation.statement_journal(text)': ownerOnly,
  'function order_automation.write_statement_journal(text,jsonb)': ownerOnly,
  'function order_automation.settle_order_statement(text[],text[],integer[])': ownerOnly,
};

let db: TestDatabase;
const stranger = `stranger_${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`create role ${stranger} login`);
});
afterAll(async () => {
  await db?.drop();
  await asSuperuser((server) => server.query(`drop role if exists ${stranger}`));
});

interface Row {
  object: string;
  owner: string;
  definer: boolean;
  public: string;
  stranger: string;
  app: string;
  admin: string;
}

async function matrix(): Promise<Row[]> {
  const { rows } = await db.pool.query<Row>(
    `
    with objects as (
      select 'schema ' || n.nspname as object, 'schema' as kind, n.oid, n.nspowner as owner, false as definer
        from pg_namespace n where n.nspname = 'order_automation'
      union all
      select case c.relkind when 'S' then 'sequence ' when 'v' then 'view ' when 'm' then 'view ' else 'table ' end
             || format('%I.%I', n.nspname, c.relname),
             case c.relkind when 'S' then 'sequence' else 'table' end, c.oid, c.relowner, false
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
         and (n.nspname = 'order_automation'
              or (n.nspname = 'public' and c.relname in ('user', 'user_store', 'store', 'new_order', 'new_order_detail')))
      union all
      select case p.prokind when 'p' then 'procedure ' else 'function ' end || p.oid::regprocedure::text,
             'routine', p.oid, p.proowner, p.prosecdef
        from pg_proc p where p.pronamespace = 'order_automation'::regnamespace
    ),
    privileges(kind, privilege) as (values
      ('schema', 'USAGE'), ('schema', 'CREATE'),
      ('table', 'SELECT'), ('table', 'INSERT'), ('table', 'UPDATE'), ('table', 'DELETE'), ('table', 'TRUNCATE'),
      ('table', 'REFERENCES'), ('table', 'TRIGGER'),
      ('sequence', 'USAGE'), ('sequence', 'SELECT'), ('sequence', 'UPDATE'),
      ('routine', 'EXECUTE')),
    roles(label, role) as (values ('public', 'public'), ('stranger', $1), ('app', 'order_automation_app'),
                                  ('admin', 'order_automation_admin')),
    allowed as (
      select o.object, r.label, p.privilege
        from objects o cross join roles r join privileges p on p.kind = o.kind
       where case o.kind
               when 'schema' then has_schema_privilege(r.role, o.oid, p.privilege)
               when 'sequence' then has_sequence_privilege(r.role, o.oid, p.privilege)
               when 'routine' then has_function_privilege(r.role, o.oid, p.privilege)
               -- A column-level grant counts: it is a right on the table too.
               when 'table' then case when p.privilege in ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
                                      then has_any_column_privilege(r.role, o.oid, p.privilege)
                                      else has_table_privilege(r.role, o.oid, p.privilege) end
             end
    )
    select o.object, pg_get_userbyid(o.owner) as owner, o.definer,
           coalesce((select string_agg(a.privilege, ' ' order by a.privilege) from allowed a where a.object = o.object and a.label = 'public'), '') as public,
           coalesce((select string_agg(a.privilege, ' ' order by a.privilege) from allowed a where a.object = o.object and a.label = 'stranger'), '') as stranger,
           coalesce((select string_agg(a.privilege, ' ' order by a.privilege) from allowed a where a.object = o.object and a.label = 'app'), '') as app,
           coalesce((select string_agg(a.privilege, ' ' order by a.privilege) from allowed a where a.object = o.object and a.label = 'admin'), '') as admin
      from objects o order by o.object`,
    [stranger],
  );
  return rows;
}

test('every object of the package and the shop tables has a decision: PUBLIC, a stranger, the app and admin roles hold exactly the rights decided, and nothing else', async () => {
  const rows = await matrix();
  expect(rows.length).toBeGreaterThan(50);
  const undecided = rows.filter((r) => !Object.hasOwn(expected, r.object)).map((r) => r.object);
  const gone = Object.keys(expected).filter((object) => !rows.some((r) => r.object === object));
  const actual = Object.fromEntries(
    rows.map((r) => [
      r.object,
      { public: r.public, stranger: r.stranger, app: r.app, admin: r.admin, definer: r.definer },
    ]),
  );
  const decided = Object.fromEntries(
    Object.entries(expected).map(([object, d]) => [
      object,
      {
        public: d.public ?? '',
        stranger: d.stranger ?? '',
        app: d.app ?? '',
        admin: d.admin ?? '',
        definer: d.definer ?? false,
      },
    ]),
  );
  // One mismatch per entry, naming the object.
  const differ = Object.keys(decided)
    .filter((o) => o in actual && JSON.stringify(actual[o]) !== JSON.stringify(decided[o]))
    .map((o) => ({ object: o, decided: decided[o], actual: actual[o] }));
  expect({
    'objects without a decision (add each to the expected table)': undecided,
    'decisions about objects that no longer exist': gone,
    'rights that differ from the decisions': differ,
  }).toEqual({
    'objects without a decision (add each to the expected table)': [],
    'decisions about objects that no longer exist': [],
    'rights that differ from the decisions': [],
  });
});

test("everything is owned by the installing role, and the jobs' commands are nobody's to write", async () => {
  const rows = await matrix();
  const installer = (
    await db.pool.query<{ owner: string }>(
      `select pg_get_userbyid(nspowner) as owner from pg_namespace where nspname = 'order_automation'`,
    )
  ).rows[0]!.owner;
  expect(rows.filter((r) => r.owner !== installer).map((r) => `${r.object} owned by ${r.owner}`)).toEqual([]);
  const columns = await db.pool.query<{ column_name: string }>(
    `select column_name from information_schema.columns where table_schema = 'order_automation' and table_name = 'job' order by 1`,
  );
  expect(columns.rows.map((r) => r.column_name)).not.toContain('command');
});
