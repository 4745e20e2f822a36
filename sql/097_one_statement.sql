-- One statement that changes orders and their lines together (a data-modifying WITH, an app's trigger,
-- an ON DELETE CASCADE): a journal, local to the transaction, lets the bookkeeping book each book once.
-- Each table's after-statement trigger finds the other table's change already made. Alone, the order's
-- trigger would reserve the lines of an order placed with them a second time, and return nothing for
-- lines deleted with their order (or in the statement that cancels it), while the lines' trigger,
-- finding the order placed, gone or cancelled, would book as if that had always been so. So while a
-- statement of one table is open, the other table's trigger writes down what it saw and booked; the
-- second trigger of the statement settles the difference. Nothing is written unless both are open.
--
-- The journal lives in settings local to the transaction (set_config(..., true): undone with a
-- failed statement or savepoint, gone at commit), tagged with the transaction: a value set for the
-- session by anyone else is ignored. A role that may write orders may also write stock and balances
-- directly; the journal serves honest statements, it is not a barrier.

create or replace function order_automation.open_statements() returns integer[]
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  v text := coalesce(current_setting('order_automation.open_statements', true), '');
begin
  -- {statements on new_order, statements on new_order_detail} whose after-statement triggers have
  -- yet to run, in this transaction.
  if v ~ '^\d+ \d+ \d+$' and split_part(v, ' ', 1) = pg_current_xact_id()::text then
    return array[split_part(v, ' ', 2)::integer, split_part(v, ' ', 3)::integer];
  end if;
  return array[0, 0];
end $$;
comment on function order_automation.open_statements() is
  'The statements on new_order and on new_order_detail (in that order) open in this transaction: started, their after-statement triggers not yet run';

create or replace function order_automation.statement_journal(part text) returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  j jsonb := nullif(current_setting('order_automation.' || statement_journal.part, true), '')::jsonb;
begin
  -- The entries of this transaction under part ('changed_orders' or 'changed_lines'), or none.
  if j ->> 'x' = pg_current_xact_id()::text then
    return coalesce(j -> 'e', '[]'::jsonb);
  end if;
  return '[]'::jsonb;
end $$;
comment on function order_automation.statement_journal(text) is
  'What the triggers of the open statements wrote down in this transaction: changed_orders (order, store, state before) or changed_lines (order, book, books returned, books booked)';

create or replace function order_automation.write_statement_journal(part text, entries jsonb) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform set_config('order_automation.' || write_statement_journal.part,
                     case when coalesce(jsonb_array_length(write_statement_journal.entries), 0) = 0 then ''
                          else jsonb_build_object('x', pg_current_xact_id()::text, 'e', write_statement_journal.entries)::text end,
                     true);
end $$;
comment on function order_automation.write_statement_journal(text, jsonb) is
  'Replaces the entries of this transaction''s journal under part (empty: clears it)';

create or replace function order_automation.count_statements(orders integer, lines integer) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform set_config('order_automation.open_statements',
                     format('%s %s %s', pg_current_xact_id(), greatest(count_statements.orders, 0),
                            greatest(count_statements.lines, 0)),
                     true);
end $$;
comment on function order_automation.count_statements(integer, integer) is
  'Records how many statements on new_order and on new_order_detail are open in this transaction';

create or replace function order_automation.tg_statement__open() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  open integer[] := order_automation.open_statements();
begin
  if tg_table_name = 'new_order' then
    perform order_automation.count_statements(open[1] + 1, open[2]);
  else
    perform order_automation.count_statements(open[1], open[2] + 1);
  end if;
  return null;
end $$;
comment on function order_automation.tg_statement__open() is
  'A statement on new_order or new_order_detail starts: counted open until its after-statement trigger closes it';

-- PostgreSQL fires these once per statement and table and kind (INSERT, UPDATE, DELETE), as it fires
-- the after-statement triggers that close them, so the counts pair up, a data-modifying WITH included.
create or replace trigger _010_open_statement before insert or update or delete on public.new_order
for each statement execute function order_automation.tg_statement__open();

create or replace trigger _010_open_statement before insert or update or delete on public.new_order_detail
for each statement execute function order_automation.tg_statement__open();

create or replace function order_automation.close_statement(table_name text) returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  open integer[] := order_automation.open_statements();
begin
  -- Called first by the after-statement triggers of both tables. For new_order: true when the
  -- statement must be settled (settle_order_statement), because lines were written down for it or
  -- a statement on the lines is open. For new_order_detail: true when a statement on new_order is
  -- open, so the lines' trigger must write down what it booked.
  if close_statement.table_name = 'new_order' then
    perform order_automation.count_statements(open[1] - 1, open[2]);
    return open[2] > 0 or coalesce(current_setting('order_automation.changed_lines', true), '') <> '';
  end if;
  perform order_automation.count_statements(open[1], open[2] - 1);
  if open[2] <= 1 then
    -- The last statement on the lines closed: what the orders' triggers wrote down for it is used.
    perform order_automation.write_statement_journal('changed_orders', null);
  end if;
  return open[1] > 0;
end $$;
comment on function order_automation.close_statement(text) is
  'Closes a statement on new_order or new_order_detail (its after-statement trigger runs); says whether the journal concerns it';

create or replace function order_automation.settle_order_statement(
  order_ids text[], store_ids text[], from_states integer[]
) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  s order_automation.settings;
  lines jsonb := order_automation.statement_journal('changed_lines');
  open integer[] := order_automation.open_statements();
  bad record;
  stores text[]; books text[]; deltas integer[]; orders text[];
begin
  -- Called by the after-statement triggers of new_order when close_statement() says so, with the
  -- orders the statement placed (from_state NULL), moved to another state or deleted (from_state:
  -- their state before).
  if jsonb_array_length(lines) > 0 and coalesce(cardinality(settle_order_statement.order_ids), 0) > 0 then
    select * into s from order_automation.settings;
    -- Lines the same statement changed: the lines' trigger booked them (booked) by the state it
    -- found; the order held its books only if it was unpaid before the statement.
    select c.order_id, c.from_state into bad
      from jsonb_to_recordset(lines) as l(o text, b text, u integer, k integer)
      join unnest(settle_order_statement.order_ids, settle_order_statement.from_states) as c(order_id, from_state)
        on c.order_id = l.o
     where c.from_state is distinct from s.state_unpaid and c.from_state is distinct from s.state_cancelled
       and c.from_state is not null
     limit 1;
    if found then
      raise exception using errcode = 'OA004',
        message = format('order %s is in state %s: its lines can change only while it is unpaid (state %s)',
                         bad.order_id, bad.from_state, s.state_unpaid);
    end if;
    select array_agg(x.store_id), array_agg(x.book_id), array_agg(x.delta), array_agg(x.order_id)
      into stores, books, deltas, orders
      from (select c.store_id, l.b as book_id, min(c.order_id) as order_id,
                   sum(case when c.from_state = s.state_unpaid then l.u else 0 end - l.k)::integer as delta
              from jsonb_to_recordset(lines) as l(o text, b text, u integer, k integer)
              join unnest(settle_order_statement.order_ids, settle_order_statement.store_ids,
                          settle_order_statement.from_states) as c(order_id, store_id, from_state)
                on c.order_id = l.o
             group by c.store_id, l.b
            having sum(case when c.from_state = s.state_unpaid then l.u else 0 end - l.k) <> 0) x;
    perform order_automation.write_statement_journal('changed_lines',
      (select jsonb_agg(e) from jsonb_array_elements(lines) e
        where not (e ->> 'o') = any (settle_order_statement.order_ids)));
    if stores is not null then
      -- The calling trigger books these orders' present lines next: every shelf of both is locked
      -- now, in the one sorted order all writers use, so the two bookings cannot deadlock another.
      perform 1 from public.store st
       where (st.store_id, st.book_id) in (
               select m.store_id, m.book_id from unnest(stores, books) as m(store_id, book_id)
               union
               select c.store_id, d.book_id
                 from unnest(settle_order_statement.order_ids, settle_order_statement.store_ids) as c(order_id, store_id)
                 join public.new_order_detail d on d.order_id = c.order_id)
       order by st.store_id, st.book_id
         for no key update of st;
      perform order_automation.move_stock(stores, books, deltas, orders);
    end if;
  end if;
  -- A statement on the lines is still open: its trigger will judge these orders by their state
  -- before this statement, and book their lines against their store (they may be gone by then).
  if open[2] > 0 and coalesce(cardinality(settle_order_statement.order_ids), 0) > 0 then
    perform order_automation.write_statement_journal('changed_orders',
      order_automation.statement_journal('changed_orders')
      || (select jsonb_agg(jsonb_build_object('o', c.order_id, 's', c.store_id, 'f', c.from_state))
            from unnest(settle_order_statement.order_ids, settle_order_statement.store_ids,
                        settle_order_statement.from_states) as c(order_id, store_id, from_state)));
  end if;
  -- The last statement on new_order closed: what the lines' triggers wrote down for it is used.
  if open[1] = 0 then
    perform order_automation.write_statement_journal('changed_lines', null);
  end if;
end $$;
comment on function order_automation.settle_order_statement(text[], text[], integer[]) is
  'Settles the stock of lines changed in the same statement as the given orders were placed (from_state NULL), moved or deleted; OA004 when such an order held money. Called after close_statement(''new_order'')';
