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
  --limit <n>    at most this many events (default 1000)
  -f, --follow   keep printing events as they are written (woken by NOTIFY) until Ctrl-C; with --json one
                 JSON object per line`,
  options: ['order', 'after', 'limit', 'follow'],
  async run({ url, args, values, print }) {
    noMore(args);
    const orderId = values.order === undefined ? undefined : String(values.order);
    const afterId = wholeNumber('--after', values.after);
    if (values.follow) {
      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort());
      for await (const event of watchEvents(url, { afterId, signal: stop.signal })) {
        if (orderId === undefined || event.orderId === orderId) print(values.json ? json(event) : eventLine(event));
      }
      return { data: undefined, text: '' };
    }
    const events = await readOrderEvents(url, { orderId, afterId, limit: wholeNumber('--limit', values.limit) });
    return { data: events, text: eventsTable(events) };
  },
};
