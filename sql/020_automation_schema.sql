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
--   OA010 pg_cron_unavailable   pg_cron is missing, not preloaded, or lives in another database

create schema order_automation;
comment on schema order_automation is
  'order-automation: auto-cancel of unpaid orders and auto-confirm of shipped ones, scheduled by pg_cron';

create table order_automation.settings (
  singleton boolean primary key default true,
  payment_timeout interval not null default '10 minutes',
  receipt_timeout interval not null default '60 seconds',
  batch_size integer not null default 1000,
  max_run_time interval not null default '50 seconds',
  -- Constraint names are the messages a user sees when a value is refused.
  constraint "settings has exactly one row" check (singleton),
  constraint "payment_timeout must be a positive interval" check (payment_timeout > interval '0'),
  constraint "receipt_timeout must be a positive interval" check (receipt_timeout > interval '0'),
  constraint "batch_size must be between 1 and 1000000" check (batch_size between 1 and 1000000),
  constraint "max_run_time must be between 1 second and 1 day"
    check (max_run_time between interval '1 second' and interval '1 day')
);
insert into order_automation.settings default values;
comment on table order_automation.settings is
  'Exactly one row: deadlines of new orders / shipments, batch size and time budget of each run';
comment on column order_automation.settings.max_run_time is
  'A run stops starting new batches after this long, so it ends before the next pg_cron tick';

create table order_automation.order_event (
  id bigint generated always as identity primary key,
  order_id text not null,
  from_state smallint,
  to_state smallint,
  cause text not null,
  at timestamptz not null default now()
);
create index order_event_order_id on order_automation.order_event (order_id, id);
comment on table order_automation.order_event is
  'Every state change of every order (from_state NULL: placed; to_state NULL: deleted). Causes of the automation: payment_timeout, receipt_timeout';

create table order_automation.run (
  id bigint generated always as identity primary key,
  job text not null,
  as_of timestamptz not null,
  batch_size integer not null,
  started_at timestamptz not null default clock_timestamp(),
  finished_at timestamptz,
  processed bigint not null default 0,
  failed bigint not null default 0,
  error text
);
create index run_job_started on order_automation.run (job, id desc);
comment on table order_automation.run is
  'One row per run of a procedure; finished_at NULL means running, or killed before it could finish';

create table order_automation.order_failure (
  id bigint generated always as identity primary key,
  run_id bigint not null references order_automation.run on delete cascade,
  order_id text not null,
  sqlstate text not null,
  message text not null,
  at timestamptz not null default clock_timestamp()
);
create index order_failure_run on order_automation.order_failure (run_id);
comment on table order_automation.order_failure is
  'Orders a run skipped because processing them raised an error; they are retried by the next run';

create table order_automation.job (
  job text primary key,
  command text not null,
  schedule text not null default '* * * * *',
  cron_database text
);
comment on table order_automation.job is
  'The scheduled jobs of the package: the command pg_cron runs, its cron schedule, and the database whose pg_cron runs it (NULL: not scheduled)';
insert into order_automation.job (job, command) values
  ('cancel_expired_orders', 'CALL order_automation.cancel_expired_orders()'),
  ('confirm_shipped_orders', 'CALL order_automation.confirm_shipped_orders()');
