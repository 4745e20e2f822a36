-- The order_automation schema: its settings, the order history (order_event), the run log and the
-- per-order failures of runs. Error codes raised by the package are listed below, once.
--
-- SQLSTATEs (class OA):
--   OA001 invalid_transition    a state change (or delete) the lifecycle does not allow
--   OA002 insufficient_stock    reserving books the store does not have (or does not sell)
--   OA003 insufficient_balance  paying an order the buyer cannot afford
--   OA004 order_not_modifiable  changing the lines of an order that is no longer unpaid
--   OA005 order_not_found       a package function named an order that does not exist
--   OA006 invalid_argument      a bad argument to a package routine (batch_size, items, schedule, ...)
--   OA007 already_extended      extending the receipt deadline of an order a second time
--   OA008 hold_conflict         holding an order already held, or releasing one that is not
--   OA009 no_store_owner        paying the seller of an order whose store has no owner, or several, in user_store
--   OA010 pg_cron_unavailable   pg_cron is missing, not preloaded, or lives in another database
--   OA011 pg_cron_job_missing   a scheduled job of the package is not (or no longer) in pg_cron's cron.job

create schema order_automation;
comment on schema order_automation is
  'order-automation: auto-cancel of unpaid orders and auto-confirm of shipped ones, scheduled by pg_cron';

create table order_automation.settings (
  singleton boolean primary key default true,
  payment_timeout interval not null default '10 minutes',
  receipt_timeout interval not null default '60 seconds',
  batch_size integer not null default 500,
  max_run_time interval not null default '50 seconds',
  payment_grace interval not null default '5 minutes',
  receipt_extension interval not null default '3 days',
  remind_before interval,
  purge_cancelled_after interval,
  history_retention interval not null default '30 days',
  bookkeeping text not null default 'full',
  state_unpaid smallint not null default 0,
  state_paid smallint not null default 1,
  state_shipped smallint not null default 2,
  state_received smallint not null default 3,
  state_cancelled smallint not null default 4,
  precision interval not null default '1 second',
  -- Constraint names are the messages a user sees when a value is refused.
  constraint "settings has exactly one row" check (singleton),
  constraint "payment_timeout must be a positive interval" check (payment_timeout > interval '0'),
  constraint "receipt_timeout must be a positive interval" check (receipt_timeout > interval '0'),
  constraint "batch_size must be between 1 and 1000000" check (batch_size between 1 and 1000000),
  constraint "max_run_time must be between 1 second and 1 day"
    check (max_run_time between interval '1 second' and interval '1 day'),
  constraint "payment_grace must be a positive interval" check (payment_grace > interval '0'),
  constraint "receipt_extension must be a positive interval" check (receipt_extension > interval '0'),
  constraint "remind_before must be a positive interval or NULL (off)" check (remind_before > interval '0'),
  constraint "purge_cancelled_after must be zero or more, or NULL (keep)" check (purge_cancelled_after >= interval '0'),
  constraint "history_retention must be at least 1 hour" check (history_retention >= interval '1 hour'),
  -- Upper bounds: a deadline or a run's window is a timestamp plus one of these, and a timestamp ends
  -- in 294276 AD; '300000 years' would pass "positive" and then fail every order or every run with
  -- "timestamp out of range". A year covers any shop's timeouts, ten years any retention.
  constraint "payment_timeout must be at most 365 days" check (payment_timeout <= interval '365 days'),
  constraint "receipt_timeout must be at most 365 days" check (receipt_timeout <= interval '365 days'),
  constraint "payment_grace must be at most 365 days" check (payment_grace <= interval '365 days'),
  constraint "receipt_extension must be at most 365 days" check (receipt_extension <= interval '365 days'),
  constraint "remind_before must be at most 365 days" check (remind_before <= interval '365 days'),
  constraint "purge_cancelled_after must be at most 3650 days" check (purge_cancelled_after <= interval '3650 days'),
  constraint "history_retention must be at most 3650 days" check (history_retention <= interval '3650 days'),
  constraint "bookkeeping must be full or automation" check (bookkeeping in ('full', 'automation')),
  -- One constraint per pair of state codes, so that a refusal names the two codes that collide.
  constraint "state_unpaid and state_paid must differ" check (state_unpaid <> state_paid),
  constraint "state_unpaid and state_shipped must differ" check (state_unpaid <> state_shipped),
  constraint "state_unpaid and state_received must differ" check (state_unpaid <> state_received),
  constraint "state_unpaid and state_cancelled must differ" check (state_unpaid <> state_cancelled),
  constraint "state_paid and state_shipped must differ" check (state_paid <> state_shipped),
  constraint "state_paid and state_received must differ" check (state_paid <> state_received),
  constraint "state_paid and state_cancelled must differ" check (state_paid <> state_cancelled),
  constraint "state_shipped and state_received must differ" check (state_shipped <> state_received),
  constraint "state_shipped and state_cancelled must differ" check (state_shipped <> state_cancelled),
  constraint "state_received and state_cancelled must differ" check (state_received <> state_cancelled),
  constraint "precision must be between 10 milliseconds and 1 minute"
    check (precision between interval '10 milliseconds' and interval '1 minute')
);
insert into order_automation.settings default values;
comment on table order_automation.settings is
  'Exactly one row: deadlines of new orders / shipments, batch size and time budget of each run';
comment on column order_automation.settings.max_run_time is
  'A run called by hand (or by pg_cron at precision 1 minute) stops starting new batches after this long, so it ends before the next pg_cron tick';
comment on column order_automation.settings.payment_grace is
  'Default of payment_started(): how long an order whose payment is in flight is safe from auto-cancel';
comment on column order_automation.settings.receipt_extension is
  'Default of extend_receipt(): how much the buyer may push the receipt deadline, once';
comment on column order_automation.settings.remind_before is
  'Write payment_due_soon / receipt_due_soon events this long before a deadline (NULL: no reminders)';
comment on column order_automation.settings.purge_cancelled_after is
  'purge_cancelled_orders() deletes cancelled orders this long after cancellation (NULL: keep; 0: at once)';
comment on column order_automation.settings.history_retention is
  'purge_history() deletes the package''s run log and its pg_cron run details older than this';
comment on column order_automation.settings.bookkeeping is
  'full: the database books every change of every writer (stock, money) and refuses illegal ones; automation: it books only the package''s own jobs, and an app that books its own changes is neither booked nor refused';
comment on column order_automation.settings.state_unpaid is
  'The codes new_order.state uses (state_unpaid .. state_cancelled, default 0-4): the lifecycle, the automation, its indexes, the status and the history follow them';
comment on column order_automation.settings.precision is
  'How late after its deadline an order may be processed: pg_cron''s run waits for deadlines until the next tick, checking at least this often (1 minute: one pass per tick)';

create table order_automation.store_settings (
  store_id text primary key references public.user_store on delete cascade,
  payment_timeout interval,
  receipt_timeout interval,
  -- NULL: the global setting. (Constraint names are cut at 63 bytes: keep these shorter.)
  constraint "store payment_timeout must be a positive interval or NULL" check (payment_timeout > interval '0'),
  constraint "store receipt_timeout must be a positive interval or NULL" check (receipt_timeout > interval '0'),
  constraint "store payment_timeout must be at most 365 days" check (payment_timeout <= interval '365 days'),
  constraint "store receipt_timeout must be at most 365 days" check (receipt_timeout <= interval '365 days')
);
comment on table order_automation.store_settings is
  'Per-store overrides of payment_timeout / receipt_timeout (NULL: the global setting); deadlines of new orders and new shipments follow them';

-- What `migrate --adopt` found and added: `down` removes exactly that, and keeps the app's tables.
create table order_automation.adopted_table (
  table_name text primary key,
  added_columns text[] not null default '{}',
  adopted_at timestamptz not null default now()
);
comment on table order_automation.adopted_table is
  'The app''s own tables the package was installed onto (migrate --adopt), with the columns it added to them; empty on a fresh install. Down drops those columns and keeps the tables and their rows';

create table order_automation.order_event (
  id bigint generated always as identity primary key,
  order_id text not null,
  from_state smallint,
  to_state smallint,
  cause text not null,
  at timestamptz not null default now(),
  note text,
  -- The writing transaction: watchers read by transaction horizon, so an event whose transaction
  -- commits after a later id's is never skipped.
  xid xid8 not null default pg_current_xact_id(),
  -- Bounded, so that a page of history is bounded: a note is a hold reason or a deadline, a cause the
  -- name of a routine (order ids are bounded by new_order's).
  constraint "note is at most 1000 characters" check (length(note) <= 1000),
  constraint "cause is at most 63 characters" check (length(cause) <= 63)
);
create index order_event_order_id on order_automation.order_event (order_id, id);
create index order_event_xid on order_automation.order_event (xid);
comment on table order_automation.order_event is
  'Every state change of every order (from_state NULL: placed; to_state NULL: deleted), and events without a change (from_state = to_state: payment_started, hold, release, receipt_extended, payment_due_soon, receipt_due_soon). Causes of the automation: payment_timeout, receipt_timeout';

create table order_automation.run (
  id bigint generated always as identity primary key,
  job text not null,
  as_of timestamptz not null,
  batch_size integer not null,
  started_at timestamptz not null default clock_timestamp(),
  finished_at timestamptz,
  processed bigint not null default 0,
  failed bigint not null default 0,
  error text,
  max_lateness interval
);
create index run_job_started on order_automation.run (job, id desc);
comment on table order_automation.run is
  'One row per run of a procedure; finished_at NULL means running, or killed before it could finish';
comment on column order_automation.run.max_lateness is
  'The latest, after its deadline, that the run processed an order (processed time minus deadline; negative: before it, for an as_of ahead of now)';

create table order_automation.order_failure (
  id bigint generated always as identity primary key,
  run_id bigint not null references order_automation.run on delete cascade,
  order_id text,
  sqlstate text not null,
  message text not null,
  at timestamptz not null default clock_timestamp(),
  step text
);
create index order_failure_run on order_automation.order_failure (run_id);
comment on table order_automation.order_failure is
  'Orders a run skipped because processing them raised an error, with the error: the first 100 of each run (run.failed counts them all; failing_order keeps each failing order once)';
comment on column order_automation.order_failure.step is
  'NULL: the job''s own work on the order; remind_due_soon: a reminder that could not be written (order_id NULL: the whole step failed)';

-- The orders a job is failing to process, one row each, whatever how many runs tried them: what runs
-- retry (after the orders never tried, least recently tried first) and what the status counts. Its
-- size follows the orders that fail, never the runs; a run that processes an order deletes its row.
create table order_automation.failing_order (
  job text not null,
  order_id text not null,
  failures integer not null default 1,
  first_failed_at timestamptz not null default clock_timestamp(),
  last_failed_at timestamptz not null default clock_timestamp(),
  sqlstate text not null,
  message text not null,
  -- When a run last tried it, or passed it over (held, or its deadline moved ahead): the order of retries.
  tried_at timestamptz not null default clock_timestamp(),
  -- No reference: the run log is purged after history_retention, a failing order stays.
  last_run_id bigint,
  primary key (job, order_id)
);
create index failing_order_tried on order_automation.failing_order (job, tried_at);
comment on table order_automation.failing_order is
  'Orders a job failed to process, one row per order and job, with how many times and the last error: runs retry them after every order never tried, least recently tried first, and stop at the first batch that fails again; processing one deletes its row';

create table order_automation.job (
  job text primary key,
  schedule text not null default '* * * * *',
  active boolean not null default true,
  cron_database text,
  -- pg_cron stores and reads a schedule, never runs it; still, only what a schedule can be is kept.
  constraint "schedule must be a pg_cron schedule, e.g. */5 * * * *" check (schedule ~ '^[0-9A-Za-z*/,@$ -]{1,100}$')
);
comment on table order_automation.job is
  'The scheduled jobs of the package: cron schedule, paused or not, and where pg_cron runs it (NULL: not scheduled). What pg_cron runs is never read from here: order_automation.job_command() builds it from the job''s name. Only the installing role writes this table; the admin role changes a schedule through set_schedule()';
insert into order_automation.job (job) values
  ('cancel_expired_orders'), ('confirm_shipped_orders'), ('purge_cancelled_orders'), ('purge_history');
-- Hourly is plenty for the run log.
update order_automation.job set schedule = '17 * * * *' where job = 'purge_history';

-- The automation's causes (payment_timeout, receipt_timeout, purge_cancelled_orders) name the
-- package's own jobs in the order history: a setting any session can set cannot vouch for them, a row
-- here can, since only the package's own routines (running as its owner) may write it.
create table order_automation.job_claim (
  xid xid8 primary key,
  cause text not null
);
comment on table order_automation.job_claim is
  'The transaction of a job of the package at work and the cause it records; written only by the package''s own routines, empty between their transactions';
