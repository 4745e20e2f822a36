-- Frozen by scripts/snapshot.ts from sql/: applied by migrations/0007_conservation.ts. Never edit.

-- >>> 097_one_statement.sql diff
@@ -0,0 +1,200 @@
+-- One statement that changes orders and their lines together (a data-modifying WITH, an app's trigger,
+-- an ON DELETE CASCADE): a journal, local to the transaction, lets the bookkeeping book each book once.
+-- Each table's after-statement trigger finds the other table's change already made. Alone, the order's
+-- trigger would reserve the lines of an order placed with them a second time, and return nothing for
+-- lines deleted with their order (or in the statement that cancels it), while the lines' trigger,
+-- finding the order placed, gone or cancelled, would book as if that had always been so. So while a
+-- statement of one table is open, the other table's trigger writes down what it saw and booked; the
+-- second trigger of the statement settles the difference. Nothing is written unless both are open.
+--
+-- The journal lives in settings local to the transaction (set_config(..., true): undone with a
+-- failed statement or savepoint, gone at commit), tagged with the transaction: a value set for the
+-- session by anyone else is ignored. A role that may write orders may also write stock and balances
+-- directly; the journal serves honest statements, it is not a barrier.
+
+create or replace function order_automation.open_statements() returns integer[]
+language plpgsql
+set search_path = pg_catalog, pg_temp
+as $$
+declare
+  v text := coalesce(current_setting('order_automation.open_statements', true), '');
+begin
+  -- {statements on new_order, statements on new_order_detail} whose after-statement triggers have
+  -- yet to run, in this transaction.
+  if v ~ '^\d+ \d+ \d+$' and split_part(v, ' ', 1) = pg_current_xact_id()::text then
+    return array[split_part(v, ' ', 2)::integer, split_part(v, ' ', 3)::integer];
+  end if;
+  return array[0, 0];
+end $$;
+comment on function order_automation.open_statements() is
+  'The statements on new_order and on new_order_detail (in that order) open in this transaction: started, their after-statement triggers not yet run';
+
+create or replace function order_automation.statement_journal(part text) returns jsonb
+language plpgsql
+set search_path = pg_catalog, pg_temp
+as $$
+declare
+  j jsonb := nullif(current_setting('order_automation.' || statement_journal.part, true), '')::jsonb;
+begin
+  -- The entries of this transaction under part ('changed_orders' or 'changed_lines'), or none.
+  if j ->> 'x' = pg_current_xact_id()::text then
+    return coalesce(j -> 'e', '[]'::jsonb);
+  end if;
+  return '[]'::jsonb;
+end $$;
+comment on function order_automation.statement_journal(text) is
+  'What the triggers of the open statements wrote down in this transaction: changed_orders (order, store, state before) or changed_lines (order, book, books returned, books booked)';
+
+create or replace function order_automation.write_statement_journal(part text, entries jsonb) returns void
+language plpgsql
+set search_path = pg_catalog, pg_temp
+as $$
+begin
+  perform set_config('order_automation.' || write_statement_journal.part,
+                     case when coalesce(jsonb_array_length(write_statement_journal.entries), 0) = 0 then ''
+                          else jsonb_build_object('x', pg_current_xact_id()::text, 'e', write_statement_journal.entries)::text end,
+                     true);
+end $$;
+comment on function order_automation.write_statement_journal(text, jsonb) is
+  'Replaces the entries of this transaction''s journal under part (empty: clears it)';
+
+create or replace function order_automation.count_statements(orders integer, lines integer) returns void
+language plpgsql
+set search_path = pg_catalog, pg_temp
+as $$
+begin
+  perform set_config('order_automation.open_statements',
+                     format('%s %s %s', pg_current_xact_id(), greatest(count_statements.orders, 0),
+                            greatest(count_statements.lines, 0)),
+                     true);
+end $$;
+comment on function order_automation.count_statements(integer, integer) is
+  'Records how many statements on new_order and on new_order_detail are open in this transaction';
+
+create or replace function order_automation.tg_statement__open() returns trigger
+language plpgsql
+security definer
+set search_path = pg_catalog, pg_temp
+as $$
+declare
+  open integer[] := order_automation.open_statements();
+begin
+  if tg_table_name = 'new_order' then
+    perform order_automation.count_statements(open[1] + 1, open[2]);
+  else
+    perform order_automation.count_statements(open[1], open[2] + 1);
+  end if;
+  return null;
+end $$;
+comment on function order_automation.tg_statement__open() is
+  'A statement on new_order or new_order_detail starts: counted open until its after-statement trigger closes it';
+
+-- PostgreSQL fires these once per statement and table and kind (INSERT, UPDATE, DELETE), as it fires
+-- the after-statement triggers that close them, so the counts pair up, a data-modifying WITH included.
+create or replace trigger _010_open_statement before insert or update or delete on public.new_order
+for each statement execute function order_automation.tg_statement__open();
+
+create or replace trigger _010_open_statement before insert or update or delete on public.new_order_detail
+for each statement execute function order_automation.tg_statement__open();
+
+create or replace function order_automation.close_statement(table_name text) returns boolean
+language plpgsql
+set search_path = pg_catalog, pg_temp
+as $$
+declare
+  open integer[] := order_automation.open_statements();
+begin
+  -- Called first by the after-statement triggers of both tables. For new_order: true when the
+  -- statement must be settled (settle_order_statement), because lines were written down for it or
+  -- a statement on the lines is open. For new_order_detail: true when a statement on new_order is
+  -- open, so the lines' trigger must write down what it booked.
+  if close_statement.table_name = 'new_order' then
+    perform order_automation.count_statements(open[1] - 1, open[2]);
+    return open[2] > 0 or coalesce(current_setting('order_automation.changed_lines', true), '') <> '';
+  end if;
+  perform order_automation.count_statements(open[1], open[2] - 1);
+  if open[2] <= 1 then
+    -- The last statement on the lines closed: what the orders' triggers wrote down for it is used.
+    perform order_automation.write_statement_journal('changed_orders', null);
+  end if;
+  return open[1] > 0;
+end $$;
+comment on function order_automation.close_statement(text) is
+  'Closes a statement on new_order or new_order_detail (its after-statement trigger runs); says whether the journal concerns it';
+
+create or replace function order_automation.settle_order_statement(
+  order_ids text[], store_ids text[], from_states integer[]
+) returns void
+language plpgsql
+set search_path = pg_catalog, pg_temp
+as $$
+declare
+  s order_automation.settings;
+  lines jsonb := order_automation.statement_journal('changed_lines');
+  open integer[] := order_automation.open_statements();
+  bad record;
+  stores text[]; books text[]; deltas integer[]; orders text[];
+begin
+  -- Called by the after-statement triggers of new_order when close_statement() says so, with the
+  -- orders the statement placed (from_state NULL), moved to another state or deleted (from_state:
+  -- their state before).
+  if jsonb_array_length(lines) > 0 and coalesce(cardinality(settle_order_statement.order_ids), 0) > 0 then
+    select * into s from order_automation.settings;
+    -- Lines the same statement changed: the lines' trigger booked them (booked) by the state it
+    -- found; the order held its books only if it was unpaid before the statement.
+    select c.order_id, c.from_state into bad
+      from jsonb_to_recordset(lines) as l(o text, b text, u integer, k integer)
+      join unnest(settle_order_statement.order_ids, settle_order_statement.from_states) as c(order_id, from_state)
+        on c.order_id = l.o
+     where c.from_state is distinct from s.state_unpaid and c.from_state is distinct from s.state_cancelled
+       and c.from_state is not null
+     limit 1;
+    if found then
+      raise exception using errcode = 'OA004',
+        message = format('order %s is in state %s: its lines can change only while it is unpaid (state %s)',
+                         bad.order_id, bad.from_state, s.state_unpaid);
+    end if;
+    select array_agg(x.store_id), array_agg(x.book_id), array_agg(x.delta), array_agg(x.order_id)
+      into stores, books, deltas, orders
+      from (select c.store_id, l.b as book_id, min(c.order_id) as order_id,
+                   sum(case when c.from_state = s.state_unpaid then l.u else 0 end - l.k)::integer as delta
+              from jsonb_to_recordset(lines) as l(o text, b text, u integer, k integer)
+              join unnest(settle_order_statement.order_ids, settle_order_statement.store_ids,
+                          settle_order_statement.from_states) as c(order_id, store_id, from_state)
+                on c.order_id = l.o
+             group by c.store_id, l.b
+            having sum(case when c.from_state = s.state_unpaid then l.u else 0 end - l.k) <> 0) x;
+    perform order_automation.write_statement_journal('changed_lines',
+      (select jsonb_agg(e) from jsonb_array_elements(lines) e
+        where not (e ->> 'o') = any (settle_order_statement.order_ids)));
+    if stores is not null then
+      -- The calling trigger books these orders' present lines next: every shelf of both is locked
+      -- now, in the one sorted order all writers use, so the two bookings cannot deadlock another.
+      perform 1 from public.store st
+       where (st.store_id, st.book_id) in (
+               select m.store_id, m.book_id from unnest(stores, books) as m(store_id, book_id)
+               union
+               select c.store_id, d.book_id
+                 from unnest(settle_order_statement.order_ids, settle_order_statement.store_ids) as c(order_id, store_id)
+                 join public.new_order_detail d on d.order_id = c.order_id)
+       order by st.store_id, st.book_id
+         for no key update of st;
+      perform order_automation.move_stock(stores, books, deltas, orders);
+    end if;
+  end if;
+  -- A statement on the lines is still open: its trigger will judge these orders by their state
+  -- before this statement, and book their lines against their store (they may be gone by then).
+  if open[2] > 0 and coalesce(cardinality(settle_order_statement.order_ids), 0) > 0 then
+    perform order_automation.write_statement_journal('changed_orders',
+      order_automation.statement_journal('changed_orders')
+      || (select jsonb_agg(jsonb_build_object('o', c.order_id, 's', c.store_id, 'f', c.from_state))
+            from unnest(settle_order_statement.order_ids, settle_order_statement.store_ids,
+                        settle_order_statement.from_states) as c(order_id, store_id, from_state)));
+  end if;
+  -- The last statement on new_order closed: what the lines' triggers wrote down for it is used.
+  if open[1] = 0 then
+    perform order_automation.write_statement_journal('changed_lines', null);
+  end if;
+end $$;
+comment on function order_automation.settle_order_statement(text[], text[], integer[]) is
+  'Settles the stock of lines changed in the same statement as the given orders were placed (from_state NULL), moved or deleted; OA004 when such an order held money. Called after close_statement(''new_order'')';

-- >>> 100_order_lifecycle.sql diff
@@ -182,4 +182,9 @@
   event_cause text := order_automation.current_cause();
 begin
+  -- Lines the same statement changed are settled first (097_one_statement.sql).
+  if order_automation.close_statement('new_order') then
+    perform order_automation.settle_order_statement(array_agg(n.order_id), array_agg(n.store_id), array_agg(null::integer))
+       from new_orders n;
+  end if;
   select * into s from order_automation.settings;
   if s.bookkeeping = 'full' then
@@ -212,4 +217,7 @@
 security definer
 set search_path = pg_catalog, pg_temp
+-- Its plans are cached per session: one planned for a statement of 20,000 orders would otherwise be
+-- JIT-compiled again for every one-order statement after it (about 20 ms each).
+set jit = off
 as $$
 declare
@@ -224,4 +232,9 @@
                                when 'receipt_timeout' then 'confirm_shipped_orders' end;
 begin
+  if order_automation.close_statement('new_order') then
+    perform order_automation.settle_order_statement(array_agg(o.order_id), array_agg(o.store_id), array_agg(o.state::integer))
+       from old_orders o join new_orders n using (order_id)
+      where o.state is distinct from n.state;
+  end if;
   select * into s from order_automation.settings;
   -- One pass over the changed rows: count them, sort them by transition, find an illegal one.
@@ -308,4 +321,8 @@
   event_cause text := order_automation.current_cause();
 begin
+  if order_automation.close_statement('new_order') then
+    perform order_automation.settle_order_statement(array_agg(o.order_id), array_agg(o.store_id), array_agg(o.state::integer))
+       from old_orders o;
+  end if;
   select * into s from order_automation.settings;
   -- Paid, shipped and received orders hold money: they are never deleted, only cancelled or kept

-- >>> 110_order_detail.sql diff
@@ -12,13 +12,24 @@
   line_books text[] := '{}'::text[];
   line_deltas integer[] := '{}'::integer[];
+  line_stores text[];
+  line_booked boolean[];
+  stale text[];
   bad_order text;
   bad_state integer;
   stores text[]; books text[]; deltas integer[]; orders text[];
   s order_automation.settings;
+  -- Orders a statement still open placed, moved or deleted, with their store and their state before
+  -- it (their trigger ran first: see 097_one_statement.sql); and whether to write down these lines.
+  journal jsonb := '[]'::jsonb;
+  writing boolean;
 begin
   select * into s from order_automation.settings;
   if s.bookkeeping = 'automation' then
+    perform order_automation.close_statement('new_order_detail');
     return null;
   end if;
+  if coalesce(current_setting('order_automation.changed_orders', true), '') <> '' then
+    journal := order_automation.statement_journal('changed_orders');
+  end if;
   -- Added lines take books off the shelf, removed lines put them back.
   if tg_op in ('INSERT', 'UPDATE') then
@@ -33,15 +44,27 @@
   end if;
 
-  -- FOR SHARE: an order cannot be paid or cancelled (and restocked) while its lines change;
-  -- the automation skips an order locked here and takes it on its next run.
-  select (array_agg(o.order_id) filter (where o.state is distinct from s.state_unpaid
+  -- An order cannot be paid or cancelled (and restocked) while its lines change: the automation
+  -- skips an order locked here and takes it on its next run. Locked in order_id order, so that
+  -- writers of lines queue instead of deadlocking. Lines can change only while the order is unpaid
+  -- (those of a cancelled one may be deleted): as it is now, and, when a statement still open moved
+  -- it, as it was before.
+  select array_agg(o.order_id) filter (where o.state = s.state_unpaid
+                                          and o.xmin::text <> (pg_current_xact_id()::text::bigint % 4294967296)::text),
+         (array_agg(o.order_id) filter (where o.state is distinct from s.state_unpaid
                                            and not (tg_op = 'DELETE' and o.state = s.state_cancelled)))[1],
          (array_agg(o.state) filter (where o.state is distinct from s.state_unpaid
-                                       and not (tg_op = 'DELETE' and o.state = s.state_cancelled)))[1]
-    into bad_order, bad_state
-    from (select o.order_id, o.state from public.new_order o
+                                        and not (tg_op = 'DELETE' and o.state = s.state_cancelled)))[1]
+    into stale, bad_order, bad_state
+    from (select o.order_id, o.state, o.xmin from public.new_order o
            where o.order_id = any (line_orders)
            order by o.order_id
-             for share) o;
+             for no key update) o;
+  if bad_order is null and jsonb_array_length(journal) > 0 then
+    select j.o, j.f into bad_order, bad_state
+      from jsonb_to_recordset(journal) as j(o text, s text, f integer)
+     where j.o = any (line_orders) and j.f is not null
+       and j.f is distinct from s.state_unpaid and not (tg_op = 'DELETE' and j.f = s.state_cancelled)
+     limit 1;
+  end if;
   if bad_order is not null then
     raise exception using errcode = 'OA004',
@@ -49,15 +72,59 @@
                        bad_order, bad_state, s.state_unpaid);
   end if;
+  -- A new version of each unpaid order another transaction wrote last: a transaction under
+  -- REPEATABLE READ or SERIALIZABLE whose snapshot still shows the old lines then fails (40001) when
+  -- it pays or cancels the order, instead of booking the lines it sees. A lock alone would not do: a
+  -- lock of a transaction that has ended is no conflict. The column is one no trigger of the package
+  -- watches. An order this transaction wrote (placed it, say) has its new version already.
+  if stale is not null then
+    update public.new_order o set receipt_deadline = o.receipt_deadline where o.order_id = any (stale);
+  end if;
+  writing := order_automation.close_statement('new_order_detail');
 
-  select array_agg(x.store_id), array_agg(x.book_id), array_agg(x.delta), array_agg(x.order_id)
-    into stores, books, deltas, orders
-    from (select o.store_id, l.book_id, sum(l.delta)::integer as delta, min(l.order_id) as order_id
-            from unnest(line_orders, line_books, line_deltas) as l(order_id, book_id, delta)
-            join public.new_order o on o.order_id = l.order_id
-           -- Lines of cancelled orders hold no stock; lines written before their order are reserved
-           -- when the order is placed.
-           where o.state = s.state_unpaid
-           group by o.store_id, l.book_id
-          having sum(l.delta) <> 0) x;
+  if jsonb_array_length(journal) = 0 and not writing then
+    -- Lines of cancelled orders hold no stock; lines written before their order are reserved when the
+    -- order is placed.
+    select array_agg(x.store_id), array_agg(x.book_id), array_agg(x.delta), array_agg(x.order_id)
+      into stores, books, deltas, orders
+      from (select o.store_id, l.book_id, sum(l.delta)::integer as delta, min(l.order_id) as order_id
+              from unnest(line_orders, line_books, line_deltas) as l(order_id, book_id, delta)
+              join public.new_order o on o.order_id = l.order_id
+             where o.state = s.state_unpaid
+             group by o.store_id, l.book_id
+            having sum(l.delta) <> 0) x;
+  else
+    -- The same, but an order a statement still open moved is judged by its state before it, and its
+    -- lines booked against its store (it may be gone): those of an order placed by the statement
+    -- were reserved by its trigger.
+    select array_agg(x.store_id order by x.n), array_agg(x.booked order by x.n)
+      into line_stores, line_booked
+      from (select l.n, coalesce(j.s, o.store_id) as store_id,
+                   case when j.o is not null then coalesce(j.f = s.state_unpaid, false)
+                        else coalesce(o.state = s.state_unpaid, false) end as booked
+              from unnest(line_orders) with ordinality as l(order_id, n)
+              left join public.new_order o on o.order_id = l.order_id
+              left join (select distinct on (e.o) e.o, e.s, e.f
+                           from rows from (jsonb_to_recordset(journal) as (o text, s text, f integer))
+                                with ordinality as e(o, s, f, n)
+                          order by e.o, e.n) j on j.o = l.order_id) x;
+    select array_agg(x.store_id), array_agg(x.book_id), array_agg(x.delta), array_agg(x.order_id)
+      into stores, books, deltas, orders
+      from (select l.store_id, l.book_id, sum(l.delta)::integer as delta, min(l.order_id) as order_id
+              from unnest(line_orders, line_books, line_deltas, line_stores, line_booked)
+                   as l(order_id, book_id, delta, store_id, booked)
+             where l.booked
+             group by l.store_id, l.book_id
+            having sum(l.delta) <> 0) x;
+    -- A statement on new_order is still open: its trigger settles these lines with what it knows
+    -- (the state each order had before it), so they are written down: books returned, books booked.
+    if writing then
+      perform order_automation.write_statement_journal('changed_lines',
+        order_automation.statement_journal('changed_lines')
+        || (select jsonb_agg(jsonb_build_object('o', l.order_id, 'b', l.book_id, 'u', l.u, 'k', l.k))
+              from (select l.order_id, l.book_id, sum(l.delta) as u, coalesce(sum(l.delta) filter (where l.booked), 0) as k
+                      from unnest(line_orders, line_books, line_deltas, line_booked) as l(order_id, book_id, delta, booked)
+                     group by l.order_id, l.book_id) l));
+    end if;
+  end if;
   if stores is not null then
     perform order_automation.move_stock(stores, books, deltas, orders);

-- >>> 600_privileges.sql from 0006_precision
