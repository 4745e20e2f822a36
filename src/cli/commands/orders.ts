// The commands about orders: hold and release one, read (or follow) the order history.
import { holdOrder, readOrderEvents, releaseOrder, watchEvents } from '../../index.js';
import { noMore, UsageError, wholeNumber } from '../args.js';
import { eventLine, eventsTable, json, oneLine, time } from '../output.js';
import type { Command } from './index.js';

export const holdCommand: Command = {
  usage: 'hold <order> <reason>',
  summary: 'hold an order (dispute, refund, review): neither auto-cancelled nor auto-confirmed until released',
  details: 'Its countdown pauses; release resumes it with the time that was left.',
  options: [],
  async run({ url, args }) {
    const [orderId, reason, ...extra] = args;
    if (orderId === undefined || reason === undefined) throw new UsageError('hold needs an order id and a reason');
    noMore(extra);
    const order = await holdOrder(url, orderId, reason);
    return { data: order, text: `order ${oneLine(order.orderId)} held: ${oneLine(order.holdReason ?? '')}` };
  },
};

export const releaseCommand: Command = {
  usage: 'release <order>',
  summary: 'release a held order: its countdown resumes with the time that was left',
  details: '',
  options: [],
  async run({ url, args }) {
    const [orderId, ...extra] = args;
    if (orderId === undefined) throw new UsageError('release needs an order id');
    noMore(extra);
    const order = await releaseOrder(url, orderId);
    const deadline =
      order.state === 'unpaid' ? order.payDeadline : order.state === 'shipped' ? order.receiptDeadline : null;
    return {
      data: order,
      text: `order ${oneLine(order.orderId)} released${deadline ? `; deadline ${time(deadline)}` : ''}`,
    };
  },
};

export const eventsCommand: Command = {
  usage: 'events [--order <id>] [--after <id>] [--limit <n>] [--follow]',
  summary: 'the order history: every state change, in order; --follow waits for new ones',
  details: `  --order <id>   only this order's events
  --after <id>   only events after this event id (to page, or to resume)
  --limit <n>    at most this many events (default 1000; with --follow: stop after n, default never)
  -f, --follow   keep printing events as they are written (woken by NOTIFY) until Ctrl-C; with --json one
                 JSON object per line`,
  options: ['order', 'after', 'limit', 'follow'],
  async run({ url, args, values, print }) {
    noMore(args);
    const orderId = values.order === undefined ? undefined : String(values.order);
    const afterId = wholeNumber('--after', values.after);
    if (values.follow) {
      // --limit with --follow: stop after that many events (none given: until Ctrl-C).
      let left = wholeNumber('--limit', values.limit) ?? Infinity;
      if (left === 0) return { data: undefined, text: '' };
      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort());
      for await (const event of watchEvents(url, { afterId, signal: stop.signal })) {
        if (orderId !== undefined && event.orderId !== orderId) continue;
        print(values.json ? json(event) : eventLine(event));
        if (--left === 0) break;
      }
      return { data: undefined, text: '' };
    }
    // Page by page (each bounded by rows and by size), printed as it comes: memory holds one page.
    // --json prints one JSON array, an event per line.
    let remaining = wholeNumber('--limit', values.limit) ?? 1000;
    let after = afterId ?? 0;
    let printed = 0;
    let held: string | undefined; // the last JSON element, printed with its comma once another follows
    if (values.json) print('[');
    while (remaining > 0) {
      const page = await readOrderEvents(url, { orderId, afterId: after, limit: Math.min(remaining, 1000) });
      if (page.length === 0) break;
      if (values.json) {
        for (const event of page) {
          if (held !== undefined) print(`${held},`);
          held = `  ${json(event)}`;
        }
      } else {
        print(eventsTable(page, printed === 0));
      }
      printed += page.length;
      remaining -= page.length;
      after = page.at(-1)!.id;
    }
    if (values.json) {
      if (held !== undefined) print(held);
      print(']');
    } else if (printed === 0) print(eventsTable([]));
    return { data: undefined, text: '' };
  },
};
