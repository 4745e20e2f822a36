// Every pg Client and Pool the tests open comes from here, with an 'error' listener. The server may
// end a connection at any moment (a test drops its database WITH (FORCE), kills a backend, crashes a
// server of its own), and pg reports that as an 'error' event on the Client, or on the Pool for an
// idle pooled connection. An 'error' event nobody listens to is an uncaught exception: vitest then
// fails the whole run, even when every test passed. The listener loses nothing: a query that was
// running rejects with the error all the same, and the next query on a dead connection fails.
import pg from 'pg';

const ignore = () => undefined;

/** Connections of each pool made here that have not closed yet. */
const openConnections = new WeakMap<pg.Pool, Set<pg.PoolClient>>();

/** A pg.Client (connect it yourself) that an ended connection never turns into an uncaught exception. */
export function newClient(config: string | pg.ClientConfig): pg.Client {
  const client = new pg.Client(config);
  client.on('error', ignore);
  return client;
}

/** A pg.Pool whose connections, idle or checked out, never turn their end into an uncaught exception. */
export function newPool(config: pg.PoolConfig): pg.Pool {
  const pool = new pg.Pool(config);
  const open = new Set<pg.PoolClient>();
  openConnections.set(pool, open);
  // The pool reports errors of idle connections; a checked-out one reports to its own listeners.
  pool.on('error', ignore);
  pool.on('connect', (client) => {
    client.on('error', ignore);
    open.add(client);
    client.once('end', () => open.delete(client));
  });
  return pool;
}

/**
 * Ends `pool` and waits until every connection of it has closed. pg's own end() resolves as soon as
 * it has asked them to close: a database dropped right after it would still find them there.
 */
export async function endPool(pool: pg.Pool): Promise<void> {
  const closed = [...(openConnections.get(pool) ?? [])].map(
    (client) => new Promise<void>((resolve) => client.once('end', () => resolve())),
  );
  await pool.end();
  await Promise.all(closed);
}
