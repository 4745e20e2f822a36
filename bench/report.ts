// The bench's figures: one table for people, the same figures as JSON for tracking over time.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Latency } from './buyers.js';
import { STORES, type Conservation, type Dataset } from './data.js';
import type { Drain, Job } from './drain.js';
import type { Floor } from './floor.js';
import type { LatenessFigures, Precision } from './precision.js';
import type { SeedLoop } from './seed-loop.js';
import type { BatchSize } from './sweep.js';
import type { Tick } from './tick.js';

export interface Results {
  startedAt: string;
  machine: { cpus: number; node: string; postgres: string };
  dataset: Dataset;
  /** The database of 10,000 orders the idle tick is compared with. */
  smallDataset: Dataset;
  drains: Record<Job, Drain>;
  seedLoop: SeedLoop;
  floors: Record<Job, Floor>;
  /** The floor in batches of the default batch_size. */
  batchedFloors: Record<Job, Floor>;
  ticks: { small: Tick[]; large: Tick[] };
  buyers: { alone: Latency; duringDrain: Latency & { drain: Drain } };
  batchSizes: BatchSize[];
  precision: Precision;
  conservation: { generated: Conservation; end: Conservation };
  ratios: Ratios;
  wallMs: number;
}

export interface Ratios {
  /** Our drain's orders/s over the seed loop's (per order), per job: target ≥ 100. */
  oursOverSeedLoop: Record<Job, number>;
  /** Our drain's time per order over the floor's: target ≤ 2. */
  oursOverFloor: Record<Job, number>;
  /** The same over the floor in batches: what the package adds to the least work of its batches. */
  oursOverBatchedFloor: Record<Job, number>;
  /** Idle tick on the large database over the 10k one, warm and cold, per job: target ≤ 1.5 (warm). */
  tickLargeOverSmall: Record<Job, { warm: number; cold: number }>;
  /** Buyer p99 during a drain over alone: target ≤ 3. */
  buyerP99DuringDrainOverAlone: number;
}

const TARGETS = {
  oursOverSeedLoop: 100,
  oursOverFloor: 2,
  idleTickMs: 2,
  tickLargeOverSmall: 1.5,
  buyerP99: 3,
  latenessP99Ms: 1_000,
  latenessMaxMs: 2_000,
  idleCorePercent: 0.2,
  idleConnections: 1,
};

export function ratios(r: Omit<Results, 'ratios' | 'wallMs'>): Ratios {
  const tickRatio = (job: Job) => {
    const large = r.ticks.large.find((t) => t.job === job)!;
    const small = r.ticks.small.find((t) => t.job === job)!;
    return { warm: large.warmMs / small.warmMs, cold: large.coldMs / small.coldMs };
  };
  return {
    oursOverSeedLoop: {
      cancel: r.drains.cancel.ordersPerSecond / r.seedLoop.ordersPerSecond,
      confirm: r.drains.confirm.ordersPerSecond / r.seedLoop.ordersPerSecond,
    },
    oursOverFloor: {
      cancel: r.floors.cancel.ordersPerSecond / r.drains.cancel.ordersPerSecond,
      confirm: r.floors.confirm.ordersPerSecond / r.drains.confirm.ordersPerSecond,
    },
    oursOverBatchedFloor: {
      cancel: r.batchedFloors.cancel.ordersPerSecond / r.drains.cancel.ordersPerSecond,
      confirm: r.batchedFloors.confirm.ordersPerSecond / r.drains.confirm.ordersPerSecond,
    },
    tickLargeOverSmall: { cancel: tickRatio('cancel'), confirm: tickRatio('confirm') },
    buyerP99DuringDrainOverAlone: r.buyers.duringDrain.p99Ms / r.buyers.alone.p99Ms,
  };
}

// ── formatting ──────────────────────────────────────────────────────────────

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (n: number) =>
  n >= 1000 ? `${(n / 1000).toFixed(2)} s` : n >= 10 ? `${n.toFixed(0)} ms` : `${n.toFixed(2)} ms`;
const bytes = (n: number) =>
  n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(0)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(0)} KiB` : `${n} B`;
const times = (n: number) => `${n >= 10 ? n.toFixed(0) : n.toFixed(2)}×`;

/** A measurement, or a section heading (a string). */
type Row = [what: string, result: string, target?: string, met?: boolean] | string;

const rate = (x: { orders: number; ms: number; ordersPerSecond: number }) =>
  `${int(x.orders)} orders in ${ms(x.ms)} = ${int(x.ordersPerSecond)} orders/s`;
// More than one CALL means a call stopped at max_run_time with orders still due.
const drainRate = (x: Drain) => `${rate(x)}${x.calls > 1 ? ` (${x.calls} calls)` : ''}`;
const rss = (x: { rssBeforeBytes: number; peakRssBytes: number; tempBytes: number }) =>
  `peak RSS ${bytes(x.peakRssBytes)} (${bytes(x.rssBeforeBytes)} at start), temp files ${bytes(x.tempBytes)}`;

function rows(r: Results): Row[] {
  const { dataset: d, ratios: q } = r;
  const tick = (ticks: Tick[], job: Job) => ticks.find((t) => t.job === job)!;
  const sizes = `${int(d.orders)} / ${int(r.smallDataset.orders)}`;
  return [
    'Drains (default settings)',
    ['drain cancel', drainRate(r.drains.cancel)],
    ['drain confirm', drainRate(r.drains.confirm)],
    'Seed loop',
    ['seed loop (cancel + confirm)', `${rate({ ...r.seedLoop, orders: r.seedLoop.cancelled + r.seedLoop.confirmed })}`],
    [
      'ours / seed loop, cancel',
      times(q.oursOverSeedLoop.cancel),
      `≥ ${TARGETS.oursOverSeedLoop}×`,
      q.oursOverSeedLoop.cancel >= TARGETS.oursOverSeedLoop,
    ],
    [
      'ours / seed loop, confirm',
      times(q.oursOverSeedLoop.confirm),
      `≥ ${TARGETS.oursOverSeedLoop}×`,
      q.oursOverSeedLoop.confirm >= TARGETS.oursOverSeedLoop,
    ],
    'Floor',
    ['floor cancel', rate(r.floors.cancel)],
    ['floor confirm', rate(r.floors.confirm)],
    [
      'ours / floor, cancel (time per order)',
      times(q.oursOverFloor.cancel),
      `≤ ${TARGETS.oursOverFloor}×`,
      q.oursOverFloor.cancel <= TARGETS.oursOverFloor,
    ],
    [
      'ours / floor, confirm (time per order)',
      times(q.oursOverFloor.confirm),
      `≤ ${TARGETS.oursOverFloor}×`,
      q.oursOverFloor.confirm <= TARGETS.oursOverFloor,
    ],
    [`floor cancel, batches of ${int(r.batchedFloors.cancel.batchSize!)}`, rate(r.batchedFloors.cancel)],
    [`floor confirm, batches of ${int(r.batchedFloors.confirm.batchSize!)}`, rate(r.batchedFloors.confirm)],
    ['ours / batched floor, cancel', times(q.oursOverBatchedFloor.cancel)],
    ['ours / batched floor, confirm', times(q.oursOverBatchedFloor.confirm)],
    'Idle tick (server time, median)',
    ...(['cancel', 'confirm'] as const).flatMap((job): Row[] => {
      const large = tick(r.ticks.large, job);
      const small = tick(r.ticks.small, job);
      return [
        [
          `idle tick ${job}, ${int(d.orders)} orders`,
          ms(large.warmMs),
          `≤ ${TARGETS.idleTickMs} ms`,
          large.warmMs <= TARGETS.idleTickMs,
        ],
        [`idle tick ${job}, ${int(r.smallDataset.orders)} orders`, ms(small.warmMs)],
        [
          `tick(${sizes}), ${job}`,
          times(q.tickLargeOverSmall[job].warm),
          `≤ ${TARGETS.tickLargeOverSmall}×`,
          q.tickLargeOverSmall[job].warm <= TARGETS.tickLargeOverSmall,
        ],
        [
          `  on a new connection, ${sizes}`,
          `${ms(large.coldMs)} / ${ms(small.coldMs)} = ${times(q.tickLargeOverSmall[job].cold)}`,
        ],
      ];
    }),
    'Buyers (8 connections, place + pay)',
    [
      'buyer latency alone',
      `p50 ${ms(r.buyers.alone.p50Ms)}, p99 ${ms(r.buyers.alone.p99Ms)} (${int(r.buyers.alone.purchases)} purchases)`,
    ],
    [
      'buyer latency during a drain',
      `p50 ${ms(r.buyers.duringDrain.p50Ms)}, p99 ${ms(r.buyers.duringDrain.p99Ms)} (${int(r.buyers.duringDrain.purchases)} purchases)`,
    ],
    ['  that drain (cancel, under buyers)', drainRate(r.buyers.duringDrain.drain)],
    [
      'buyer p99 during drain / alone',
      times(q.buyerP99DuringDrainOverAlone),
      `≤ ${TARGETS.buyerP99}×`,
      q.buyerP99DuringDrainOverAlone <= TARGETS.buyerP99,
    ],
    'Memory',
    ['drain cancel', rss(r.drains.cancel)],
    ['drain confirm', rss(r.drains.confirm)],
    ['seed loop (loads every order)', rss(r.seedLoop)],
    ...(r.batchSizes.length === 0
      ? []
      : [
          'Batch sizes',
          ...r.batchSizes.map((b): Row => [
            `batch_size ${int(b.batchSize)}`,
            `cancel ${int(b.cancel.ordersPerSecond)}/s, confirm ${int(b.confirm.ordersPerSecond)}/s, buyer p99 in drain ${ms(b.buyerP99Ms)}`,
          ]),
        ]),
    ...precisionRows(r.precision),
    'Checks',
    ['stock and money conserved', conserved(r) ? 'yes' : `NO: ${JSON.stringify(r.conservation)}`, 'yes', conserved(r)],
  ];
}

const lateness = (f: LatenessFigures) =>
  `p50 ${ms(f.p50Ms)}, p99 ${ms(f.p99Ms)}, max ${ms(f.maxMs)} (${int(f.orders)} orders)`;

function precisionRows(p: Precision): Row[] {
  const idleMet = p.idle.p99Ms <= TARGETS.latenessP99Ms && p.idle.maxMs <= TARGETS.latenessMaxMs;
  const core = p.idleCost.cpuMsPerSecond === null ? null : p.idleCost.cpuMsPerSecond / 10;
  return [
    `Deadline precision (real pg_cron ${p.pgCron} schedule, precision ${p.precision})`,
    [
      'lateness, orders due at spread-out instants',
      lateness(p.idle),
      `p99 ≤ ${ms(TARGETS.latenessP99Ms)}, max ≤ ${ms(TARGETS.latenessMaxMs)}`,
      idleMet,
    ],
    [`lateness, ${int(p.wave.orders)} orders due at one instant`, lateness(p.wave)],
    ['lateness, orders due at spread-out instants meanwhile', lateness(p.duringWave)],
    [
      `idle: CPU of the waiting backend (${p.idleCost.seconds.toFixed(0)} s)`,
      core === null ? 'n/a (not this machine)' : `${core.toFixed(3)} % of a core`,
      `≤ ${TARGETS.idleCorePercent} %`,
      core === null ? undefined : core <= TARGETS.idleCorePercent,
    ],
    [
      'idle: connections running a job',
      `${p.idleCost.connectionsMedian} (at most ${p.idleCost.connectionsMax} at a tick)`,
      `≤ ${TARGETS.idleConnections}`,
      p.idleCost.connectionsMedian <= TARGETS.idleConnections,
    ],
  ];
}

const precisionNote =
  'Deadline precision: a database of its own with the same data, its jobs scheduled in pg_cron (every minute, default settings), measured once the first tick has started the waiter. Lateness: cancelled_at - pay_deadline, received_at - receipt_deadline. Spread-out: unpaid and shipped orders alternately, due evenly over 90 s. One instant: every unpaid order of the data (category 0) due at once, with 60 more due over the 30 s after. Idle CPU: /proc/<pid>/schedstat of each backend pg_cron ran a job on, sampled twice a second for 60 s with nothing due; connections: those backends, sampled alike.';

/** The precision part alone (npm run bench -- --only precision). */
export function formatPrecisionTable(p: Precision): string {
  return formatRows(precisionRows(p), [precisionNote]);
}

/** How each figure was obtained: printed under the table. */
function notes(r: Results): string[] {
  const d = r.dataset;
  const tickCalls = r.ticks.large[0]?.calls ?? 0;
  return [
    `Data: ${int(d.orders)} orders of ${int(STORES)} stores, 3 lines each, in every state: ${int(d.dueCancel)} unpaid and due, ${int(d.dueConfirm)} shipped and due, ${int(d.dueLater)} unpaid and due later (the drain under buyers); generated in ${ms(d.generateMs)}. PostgreSQL ${r.machine.postgres}, ${r.machine.cpus} CPUs, Node ${r.machine.node}; run took ${ms(r.wallMs)}.`,
    'Drains: CALL order_automation.cancel_expired_orders(as_of => …) (confirm_shipped_orders alike) with the default settings, repeated until it finds nothing due; wall time at the client.',
    `Seed loop: the reference algorithm in TypeScript over pg (load every order; per due order read its lines, read and write back each stock row or the seller's balance, update the order), stock bug fixed, one transaction, on copies without triggers of ${int(r.seedLoop.loaded)} orders; its rate counts the load of every order.`,
    'Floor: one statement with triggers off (session_replication_role = replica), rolled back: flip the state, put the stock back per store and book (cancel) or pay each seller once (confirm), one event per order; over every due order at once (the reference of the target), and over batches of the default batch_size in deadline order, each rolled back.',
    `Idle tick: clock_timestamp() read around the CALL in a DO block, so server time including the procedure's commits; median of ${tickCalls} calls on one connection after a first, and of ${tickCalls} first calls of new connections (pg_cron opens one per run); as_of before every deadline.`,
    'Buyers: each a loop of BEGIN; place_order (3 books of a random store); pay_order; COMMIT; "during a drain": purchases started while a cancel drain ran.',
    "Memory: this Node process's RSS sampled every 10 ms; temp files: growth of pg_stat_database.temp_bytes.",
    precisionNote,
  ];
}

function conserved(r: Pick<Results, 'conservation'>): boolean {
  const { generated, end } = r.conservation;
  return generated.booksOffBalance === 0 && end.booksOffBalance === 0 && generated.money === end.money;
}

const verdict = (met: boolean | undefined) => (met === undefined ? '' : met ? 'met' : 'MISSED');

/** The table, as Markdown with aligned columns, so that it reads in a terminal and pastes into the README. */
export function formatTable(r: Results): string {
  return formatRows(rows(r), notes(r));
}

function formatRows(table: Row[], notes: string[]): string {
  const cells = table.map((row) =>
    typeof row === 'string' ? [`**${row}**`, '', '', ''] : [row[0], row[1], row[2] ?? '', verdict(row[3])],
  );
  const header = ['measurement', 'result', 'target', ''];
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => `| ${c.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`;
  return [
    line(header),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...cells.map(line),
    '',
    ...notes.map((note) => `- ${note}`),
  ].join('\n');
}

/** Writes the figures to bench/results/<timestamp>.json; returns the path. */
export async function writeJson(r: { startedAt: string }): Promise<string> {
  const dir = path.join(import.meta.dirname, 'results');
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${r.startedAt.replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(r, null, 2)}\n`);
  return file;
}
