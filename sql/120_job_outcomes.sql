-- What the package's own jobs book, whatever the bookkeeping setting: an auto-cancel puts the books
-- of the order's lines back on the shelf (an unpaid order holds no money), an auto-confirm pays the
-- store's owner. Kept in one function, apart from the lifecycle triggers, so that the procedures can
-- book a batch themselves (where tables refuse triggers) and the trigger then skips their statements.

create or replace function order_automation.book_job_outcomes(job text, order_ids text[]) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  sellers text[]; totals bigint[]; orders text[];
begin
  if book_job_outcomes.order_ids is null or cardinality(book_job_outcomes.order_ids) = 0 then
    return;
  end if;
  case book_job_outcomes.job
    when 'cancel_expired_orders' then
      perform order_automation.restock(book_job_outcomes.order_ids);
    when 'confirm_shipped_orders' then
      select array_agg(c.user_id order by c.user_id), array_agg(c.total order by c.user_id),
             array_agg(c.order_id order by c.user_id)
        into sellers, totals, orders
        from order_automation.seller_credits(book_job_outcomes.order_ids) c
       where c.total <> 0;
      if sellers is not null then
        perform order_automation.move_money(sellers, totals, orders);
      end if;
    else
      raise exception using errcode = 'OA006', message = format('no job %L books orders', book_job_outcomes.job);
  end case;
end $$;
comment on function order_automation.book_job_outcomes(text, text[]) is
  'Books, once, what a job did to the given orders: cancel_expired_orders restocks their lines, confirm_shipped_orders pays their sellers';
