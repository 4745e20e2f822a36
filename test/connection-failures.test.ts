// What goes wrong before any SQL runs comes back as a typed error with one paragraph that says what
// to check: a server that closes the socket, one that never answers, SSL refused, node-pg-migrate's
// own table refused. And watchEvents gives up, typed, on what no reconnect can cure, instead of
// retrying in silence.
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import {
  DatabaseUnreachableError,
  getStatus,
  migrate,
  NotInstalledError,
  OrderAutomationError,
  PermissionDeniedError,
  watchEvents,
} from '../src/index.js';
import { admin as asSuperuser, createTestDatabase, type TestDatabase } from './helpers.js';

const servers: { server: net.Server; sockets: Set<net.Socket> }[] = [];
afterAll(async () => {
  for (const { server, sockets } of servers) {
    sockets.forEach((socket) => socket.destroy());
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A TCP server on loopback doing `onConnection` with every socket; its URL. */
async function fakeServer(onConnection: (socket: net.Socket) => void): Promise<string> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    onConnection(socket);
  });
  servers.push({ server, sockets });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return `postgres://nobody@127.0.0.1:${port}/shop`;
}

/** A loopback port nothing listens on. */
async function deadPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** One paragraph: no stack lines, no line breaks. */
const oneParagraph = (error: Error) => expect(error.message).not.toMatch(/\n/);

describe('connection failures are typed, one paragraph', () => {
  test('a server that closes the socket at once', async () => {
    const url = await fakeServer((socket) => socket.destroy());
    const error = await getStatus(url).catch((e: Error) => e);
    expect(error).toBeInstanceOf(DatabaseUnreachableError);
    expect((error as Error).message).toMatch(/closed the connection unexpectedly/);
    oneParagraph(error as Error);
  });

  test('a server that never answers: given up after 10 s', async () => {
    const url = await fakeServer(() => undefined);
    const started = Date.now();
    const error = await getStatus(url).catch((e: Error) => e);
    expect(error).toBeInstanceOf(DatabaseUnreachableError);
    expect((error as Error).message).toMatch(/did not answer in time/);
    expect(Date.now() - started).toBeLessThan(15_000);
    oneParagraph(error as Error);
  }, 30_000);

  test('sslmode=require against a server without SSL', async () => {
    const url = new URL(inject('serverUrl'));
    url.searchParams.set('sslmode', 'require');
    const error = await getStatus(url.toString()).catch((e: Error) => e);
    expect(error).toBeInstanceOf(DatabaseUnreachableError);
    expect((error as Error).message).toMatch(/SSL/);
    oneParagraph(error as Error);
  });

  describe('a role that may not create the migrations table in public', () => {
    let db: TestDatabase;
    const role = `plain_${randomBytes(4).toString('hex')}`;
    beforeAll(async () => {
      db = await createTestDatabase({ template: null });
      await asSuperuser((c) => c.query(`create role ${role} login`));
    });
    afterAll(async () => {
      await db?.drop();
      await asSuperuser((c) => c.query(`drop role if exists ${role}`));
    });

    test('migrate fails with PermissionDeniedError naming the table and the grant, without the stack node-pg-migrate wraps into its message', async () => {
      const url = new URL(db.url);
      url.username = role;
      const error = await migrate(url.toString(), { schedule: false }).catch((e: Error) => e);
      expect(error).toBeInstanceOf(PermissionDeniedError);
      // Told before anything is applied, with every grant it lacks.
      expect((error as Error).message).toMatch(
        /may not create tables in schema public .* the migrations table public\.order_automation_migrations/,
      );
      expect((error as Error).message).toMatch(/GRANT CREATE ON SCHEMA public TO /);
      expect((error as Error).message).toMatch(/GRANT CREATE ON DATABASE /);
      expect((error as Error).message).toMatch(/Nothing was applied/);
      oneParagraph(error as Error);
    });
  });
});

describe('watchEvents gives up on errors that will not go away', () => {
  /** The first thing the iterator does: an event, the end, or the error it gives up with; or "hung". */
  async function firstOutcome(url: string): Promise<unknown> {
    const controller = new AbortController();
    const iterator = watchEvents(url, { signal: controller.signal, reconnectDelayMs: 100 });
    const timer = new Promise((resolve) => setTimeout(() => resolve('hung'), 10_000));
    try {
      return await Promise.race([
        iterator.next().then(
          (r) => r,
          (e: unknown) => e,
        ),
        timer,
      ]);
    } finally {
      controller.abort();
    }
  }

  test('a database where the package is not installed', async () => {
    const db = await createTestDatabase({ template: null });
    try {
      const outcome = await firstOutcome(db.url);
      expect(outcome).toBeInstanceOf(NotInstalledError);
    } finally {
      await db.drop();
    }
  }, 20_000);

  test('a port nothing listens on', async () => {
    const outcome = await firstOutcome(`postgres://postgres@127.0.0.1:${await deadPort()}/shop`);
    expect(outcome).toBeInstanceOf(DatabaseUnreachableError);
  }, 20_000);

  test('a login the server refuses', async () => {
    const url = new URL(inject('serverUrl'));
    url.username = `no_such_role_${randomBytes(4).toString('hex')}`;
    const outcome = await firstOutcome(url.toString());
    expect(outcome).toBeInstanceOf(OrderAutomationError);
    expect((outcome as Error).message).toMatch(/does not exist|authentication/);
  }, 20_000);
});
