// Adopting an app's own tables (migrate --adopt); the state codes and the bookkeeping ('full' or
// 'automation') in the settings; the package's jobs booked by one function of their own.
import type { MigrationBuilder } from 'node-pg-migrate';
import { automationSchemaChanges as release2SchemaChanges } from './0002_shop_features.js';
import { adopting } from './lib/adoption.js';
import { trustSchemaChanges } from './0003_trust.js';
import { packageTableLimits } from './0004_bounds.js';
import { apply, previous, released, routinesAsOf } from './snapshots/index.js';

/** What this release changed in the order_automation schema's own tables. */
const schemaChanges = `
  alter table order_automation.settings
    add column bookkeeping text not null default 'full',
    add column state_unpaid smallint not null default 0,
    add column state_paid smallint not null default 1,
    add column state_shipped smallint not null default 2,
    add column state_received smallint not null default 3,
    add column state_cancelled smallint not null default 4,
    add constraint "bookkeeping must be full or automation" check (bookkeeping in ('full', 'automation')),
    add constraint "state_unpaid and state_paid must differ" check (state_unpaid <> state_paid),
    add constraint "state_unpaid and state_shipped must differ" check (state_unpaid <> state_shipped),
    add constraint "state_unpaid and state_received must differ" check (state_unpaid <> state_received),
    add constraint "state_unpaid and state_cancelled must differ" check (state_unpaid <> state_cancelled),
    add constraint "state_paid and state_shipped must differ" check (state_paid <> state_shipped),
    add constraint "state_paid and state_received must differ" check (state_paid <> state_received),
    add constraint "state_paid and state_cancelled must differ" check (state_paid <> state_cancelled),
    add constraint "state_shipped and state_received must differ" check (state_shipped <> state_received),
    add constraint "state_shipped and state_cancelled must differ" check (state_shipped <> state_cancelled),
    add constraint "state_received and state_cancelled must differ" check (state_received <> state_cancelled);
  comment on column order_automation.settings.bookkeeping is
    'full: the database books every change of every writer (stock, money) and refuses illegal ones; automation: it books only the package''s own jobs, and an app that books its own changes is neither booked nor refused';
  comment on column order_automation.settings.state_unpaid is
    'The codes new_order.state uses (state_unpaid .. state_cancelled, default 0-4): the lifecycle, the automation, its indexes, the status and the history follow them';

  create table order_automation.adopted_table (
    table_name text primary key,
    added_columns text[] not null default '{}',
    adopted_at timestamptz not null default now()
  );
  comment on table order_automation.adopted_table is
    'The app''s own tables the package was installed onto (migrate --adopt), with the columns it added to them; empty on a fresh install. Down drops those columns and keeps the tables and their rows';
`;

/**
 * The five bookstore tables on a database being adopted: an app's own table is kept as it is, and
 * new_order gets the package's columns it lacks (nullable, no default: no rewrite of its rows); a
 * missing table is created as a fresh install creates it, with foreign keys only to tables created
 * here (an app writes an order's lines before the order; its user_store may have no key on store_id).
 * Recorded in adopted_table, so that down removes exactly this.
 */
const adoptTables = `
do $adopt$
declare
  found text[] := array(select c.relname::text from pg_catalog.pg_class c
                         where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
                           and c.relname in ('user', 'user_store', 'store', 'new_order', 'new_order_detail'));
  added text[] := '{}';
  col record;
begin
  if not 'user' = any (found) then
    create table public."user" (
      user_id text primary key,
      balance bigint not null default 0 check (balance >= 0)
    );
  end if;
  if not 'user_store' = any (found) then
    create table public.user_store (store_id text primary key, user_id text not null);
    if not 'user' = any (found) then
      alter table public.user_store add foreign key (user_id) references public."user";
    end if;
  end if;
  if not 'store' = any (found) then
    create table public.store (
      store_id text,
      book_id text,
      stock_level integer not null check (stock_level >= 0),
      primary key (store_id, book_id)
    );
    if not 'user_store' = any (found) then
      alter table public.store add foreign key (store_id) references public.user_store;
    end if;
  end if;
  if not 'new_order' = any (found) then
    create table public.new_order (
      order_id text primary key,
      user_id text not null,
      store_id text not null,
      state smallint not null default 0,
      created_at timestamptz not null default now(),
      paid_at timestamptz,
      shipped_at timestamptz,
      received_at timestamptz,
      cancelled_at timestamptz,
      pay_deadline timestamptz,
      receipt_deadline timestamptz,
      held_at timestamptz,
      hold_reason text,
      receipt_extended_at timestamptz,
      reminded_state smallint
    );
    if not 'user' = any (found) then
      alter table public.new_order add foreign key (user_id) references public."user";
    end if;
    if not 'user_store' = any (found) then
      alter table public.new_order add foreign key (store_id) references public.user_store;
    end if;
    comment on column public.new_order.state is
      '0 unpaid, 1 paid, 2 shipped, 3 received, 4 cancelled; transitions are guarded by order_automation triggers';
    create index new_order_user_id on public.new_order (user_id);
    create index new_order_store_id on public.new_order (store_id);
  else
    for col in select * from (values ('created_at', 'timestamptz'), ('paid_at', 'timestamptz'),
                                     ('shipped_at', 'timestamptz'), ('received_at', 'timestamptz'),
                                     ('cancelled_at', 'timestamptz'), ('pay_deadline', 'timestamptz'),
                                     ('receipt_deadline', 'timestamptz'), ('held_at', 'timestamptz'),
                                     ('hold_reason', 'text'), ('receipt_extended_at', 'timestamptz'),
                                     ('reminded_state', 'smallint')) as c(name, type)
    loop
      -- A column of that name and type the app already has is used as it is, and kept by down.
      if not exists (select from pg_catalog.pg_attribute a
                      where a.attrelid = 'public.new_order'::regclass and a.attname = col.name and not a.attisdropped) then
        execute format('alter table public.new_order add column %I %s', col.name, col.type);
        added := added || col.name;
      end if;
    end loop;
  end if;
  if not 'new_order' = any (found) or 'held_at' = any (added) then
    comment on column public.new_order.held_at is
      'Set by order_automation.hold(): a held order is neither auto-cancelled nor auto-confirmed';
  end if;
  if not 'new_order' = any (found) or 'reminded_state' = any (added) then
    comment on column public.new_order.reminded_state is
      'The state whose due-soon reminder was written (order_automation remind_before): once per order and state';
  end if;
  if not 'new_order_detail' = any (found) then
    create table public.new_order_detail (
      order_id text,
      book_id text,
      count integer not null check (count > 0),
      price bigint not null check (price >= 0),
      primary key (order_id, book_id)
    );
    if not 'new_order' = any (found) then
      alter table public.new_order_detail add foreign key (order_id) references public.new_order;
    end if;
  end if;
  if not 'user_store' = any (found) then
    alter table order_automation.store_settings
      add foreign key (store_id) references public.user_store on delete cascade;
  end if;
  insert into order_automation.adopted_table (table_name, added_columns)
  select t, case when t = 'new_order' then added else '{}' end from unnest(found) t;
end $adopt$;
`;

/**
 * Deadlines for the orders an adopted app left open: from its own columns when migrate was given
 * them (timestamptz; timestamp, read in the session's TimeZone; or epoch seconds, 0 meaning not set),
 * otherwise from now. Only open orders without a deadline are written.
 */
const backfillDeadlines = `
do $backfill$
declare
  s order_automation.settings := (select x from order_automation.settings x);
  spec record;
  kind regtype;
  instant text;
begin
  for spec in
    select * from (values
      ('created_at', 'pay_deadline', current_setting('order_automation.created_at_column', true), s.state_unpaid, s.payment_timeout),
      ('shipped_at', 'receipt_deadline', current_setting('order_automation.shipped_at_column', true), s.state_shipped, s.receipt_timeout))
      as v(stamp, deadline, app_column, state, timeout)
  loop
    instant := 'null';
    if coalesce(spec.app_column, '') <> '' then
      select a.atttypid::regtype into kind from pg_catalog.pg_attribute a
       where a.attrelid = 'public.new_order'::regclass and a.attname = spec.app_column and not a.attisdropped;
      instant := case
        when kind = 'timestamptz'::regtype then format('o.%I', spec.app_column)
        when kind = 'timestamp'::regtype then format('o.%I::timestamptz', spec.app_column)
        when kind in ('integer'::regtype, 'bigint'::regtype, 'numeric'::regtype, 'double precision'::regtype) then
          format('to_timestamp(nullif(o.%I, 0)::double precision)', spec.app_column)
      end;
      if instant is null then
        raise exception 'new_order.% (%) holds no time: it cannot give the orders'' %', spec.app_column, kind, spec.stamp;
      end if;
    end if;
    execute format('update public.new_order o set %1$I = coalesce(o.%1$I, %3$s), %2$I = coalesce(o.%1$I, %3$s, now()) + $2
                     where o.state = $1 and o.%2$I is null', spec.stamp, spec.deadline, instant)
      using spec.state, spec.timeout;
  end loop;
end $backfill$;
`;

/** The options migrate() was given for the first install: bookkeeping and state codes. */
const installOptions = `
  update order_automation.settings s set
    bookkeeping = coalesce(nullif(current_setting('order_automation.bookkeeping', true), ''), s.bookkeeping),
    state_unpaid = coalesce((o.codes ->> 'unpaid')::smallint, s.state_unpaid),
    state_paid = coalesce((o.codes ->> 'paid')::smallint, s.state_paid),
    state_shipped = coalesce((o.codes ->> 'shipped')::smallint, s.state_shipped),
    state_received = coalesce((o.codes ->> 'received')::smallint, s.state_received),
    state_cancelled = coalesce((o.codes ->> 'cancelled')::smallint, s.state_cancelled)
  from (select coalesce(nullif(current_setting('order_automation.state_codes', true), ''), '{}')::jsonb as codes) o;
`;

export async function up(pgm: MigrationBuilder): Promise<void> {
  if (await adopting(pgm)) {
    // Everything the earlier releases installed, at once, onto the app's tables: the schema's own
    // tables as they made them, the bookstore's as adoptTables keeps or creates them, their routines.
    pgm.sql(released('020_automation_schema.sql', '0002_shop_features')!.text!);
    pgm.sql(release2SchemaChanges);
    pgm.sql(trustSchemaChanges);
    pgm.sql(packageTableLimits);
    pgm.sql(schemaChanges);
    pgm.sql(adoptTables);
    pgm.sql(routinesAsOf('0005_adopt'));
    pgm.sql(installOptions);
    // The indexes the automation probes, for the state codes now in settings (unless just built).
    pgm.sql(
      `select order_automation.index_state_codes() where to_regclass('public.new_order_pay_deadline_due') is null`,
    );
    pgm.sql(backfillDeadlines);
  } else {
    pgm.sql(schemaChanges);
    pgm.sql(apply('0005_adopt'));
    pgm.sql(installOptions);
  }
  pgm.sql('select order_automation.install_schedule()');
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  const [adopted] = (await pgm.db.select(
    `select to_regclass('order_automation.adopted_table') is not null
            and exists (select from order_automation.adopted_table) as adopted`,
  )) as { adopted: boolean }[];
  if (adopted?.adopted) {
    // An adopted database goes down whole (migrate refuses to stop half-way): the package's schema,
    // jobs, triggers, indexes and columns go, the tables it created go; the app's tables and their
    // rows stay as they were. The earlier releases' downs then have nothing left to do.
    pgm.sql(`
      select order_automation.unschedule_jobs();
      do $remove$
      declare
        kept jsonb := (select jsonb_object_agg(t.table_name, t.added_columns) from order_automation.adopted_table t);
        shop text[] := array['new_order_detail', 'new_order', 'store', 'user_store', 'user'];
        one text;
        grantee text;
      begin
        -- The package's functions, and with them its triggers on the app's tables.
        drop schema order_automation cascade;
        drop index if exists public.new_order_pay_deadline_due, public.new_order_receipt_deadline_due,
          public.new_order_cancelled_at;
        foreach one in array shop loop
          if kept ? one then
            if jsonb_array_length(kept -> one) > 0 then
              execute format('alter table public.%I %s', one,
                             (select string_agg(format('drop column %I', c), ', ')
                                from jsonb_array_elements_text(kept -> one) c));
            end if;
            foreach grantee in array array['order_automation_app', 'order_automation_admin'] loop
              if exists (select from pg_catalog.pg_roles where rolname = grantee) then
                execute format('revoke all on public.%I from %I', one, grantee);
              end if;
            end loop;
          else
            execute format('drop table public.%I', one);
          end if;
        end loop;
      end $remove$;
      select set_config('order_automation.adoption_removed', 'on', true);
    `);
    return;
  }
  pgm.sql(`
    -- Back to the codes the previous release has written in its indexes (the trigger rebuilds them).
    update order_automation.settings
       set state_unpaid = 0, state_paid = 1, state_shipped = 2, state_received = 3, state_cancelled = 4;
    drop trigger _200_state_codes on order_automation.settings;
    drop trigger _040_keep_outcome on public.new_order;
    drop function order_automation.tg_settings__state_codes(), order_automation.index_state_codes(),
      order_automation.tg_new_order__keep_outcome(), order_automation.book_job_outcomes(text, text[]),
      order_automation.seller_credits(text[]), order_automation.move_money(text[], bigint[], text[]),
      order_automation.restock(text[]);
  `);
  // The previous release's versions of the routines this one changed, and its privileges.
  pgm.sql(previous('0005_adopt'));
  pgm.sql(`
    drop table order_automation.adopted_table;
    alter table order_automation.settings
      drop column bookkeeping, drop column state_unpaid, drop column state_paid, drop column state_shipped,
      drop column state_received, drop column state_cancelled;
  `);
}
