-- The bookstore's own tables: users and their balances, stores and their stock,
-- orders and their lines. Apps may add columns; the package relies on the ones below.
-- Ids are at most 255 characters (the width of the usual varchar(255)) and a hold reason at most
-- 1000: they are copied into the order history, echoed in messages and printed by the CLI, so a
-- text of a hundred million characters must never get in.

create table public."user" (
  user_id text primary key,
  balance bigint not null default 0 check (balance >= 0),
  constraint "user_id is at most 255 characters" check (length(user_id) <= 255)
);

create table public.user_store (
  store_id text primary key,
  user_id text not null references public."user",
  constraint "store_id is at most 255 characters" check (length(store_id) <= 255)
);

create table public.store (
  store_id text references public.user_store,
  book_id text,
  stock_level integer not null check (stock_level >= 0),
  primary key (store_id, book_id),
  constraint "book_id is at most 255 characters" check (length(book_id) <= 255)
);

create table public.new_order (
  order_id text primary key,
  user_id text not null references public."user",
  store_id text not null references public.user_store,
  state smallint not null default 0,
  created_at timestamptz not null default now(),
  paid_at timestamptz,
  shipped_at timestamptz,
  received_at timestamptz,
  cancelled_at timestamptz,
  pay_deadline timestamptz,
  receipt_deadline timestamptz,
  -- Kept by order_automation: a hold, the one receipt extension, the last reminder, a failing order.
  held_at timestamptz,
  hold_reason text,
  receipt_extended_at timestamptz,
  reminded_state smallint,
  failed_state smallint,
  constraint "order_id is at most 255 characters" check (length(order_id) <= 255),
  constraint "hold_reason is at most 1000 characters" check (length(hold_reason) <= 1000)
);

comment on column public.new_order.state is
  '0 unpaid, 1 paid, 2 shipped, 3 received, 4 cancelled; transitions are guarded by order_automation triggers';
comment on column public.new_order.held_at is
  'Set by order_automation.hold(): a held order is neither auto-cancelled nor auto-confirmed';
comment on column public.new_order.reminded_state is
  'The state whose due-soon reminder was written (order_automation remind_before): once per order and state';
comment on column public.new_order.failed_state is
  'The state in which order_automation last failed to process the order (order_automation.failing_order): it then leaves that state''s due index, and later runs retry it after the orders never tried';

create table public.new_order_detail (
  order_id text references public.new_order,
  book_id text,
  count integer not null check (count > 0),
  price bigint not null check (price >= 0),
  primary key (order_id, book_id)
);

-- What the automation probes every tick: only the orders that can still become due are indexed,
-- so a tick with nothing due is an index probe however large the table grows. Orders it failed to
-- process in that state are left out too: thousands of them cost a probe nothing.
create index new_order_pay_deadline_due on public.new_order (pay_deadline)
  where state = 0 and held_at is null and (failed_state is null or failed_state <> 0);
create index new_order_receipt_deadline_due on public.new_order (receipt_deadline)
  where state = 2 and held_at is null and (failed_state is null or failed_state <> 2);
-- What purge_cancelled_orders probes.
create index new_order_cancelled_at on public.new_order (cancelled_at) where state = 4;
create index new_order_user_id on public.new_order (user_id);
create index new_order_store_id on public.new_order (store_id);
