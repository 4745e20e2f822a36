// Provider "testcontainers": a container built from docker/postgres-cron, when a Docker engine
// (or Podman serving the Docker API) answers.
import { existsSync, readFileSync } from 'node:fs';
import { copyFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Database, DEFAULT_MAJOR, messageOf, readCronDatabase } from './common.js';

const DOCKER_PING_TIMEOUT_MS = 1500;

type DockerEngine = { ok: true } | { ok: false; reason: string };

/**
 * Our own quick probe, so that machines without Docker never load testcontainers
 * (whose runtime discovery can take many seconds to give up).
 */
export async function detectDockerEngine(): Promise<DockerEngine> {
  const dockerHost = process.env.DOCKER_HOST;
  if (dockerHost) {
    if (dockerHost.startsWith('unix://')) return pingSocket(dockerHost.slice('unix://'.length));
    if (dockerHost.startsWith('tcp://')) return pingTcp(new URL(dockerHost));
    return { ok: false, reason: `DOCKER_HOST=${dockerHost} is neither unix:// nor tcp://` };
  }
  // The same sockets testcontainers looks for when DOCKER_HOST is unset (rootful, then rootless).
  const candidates = [
    '/var/run/docker.sock',
    ...(process.env.XDG_RUNTIME_DIR ? [path.join(process.env.XDG_RUNTIME_DIR, 'docker.sock')] : []),
    path.join(os.homedir(), '.docker', 'run', 'docker.sock'),
    path.join(os.homedir(), '.docker', 'desktop', 'docker.sock'),
    ...(process.getuid ? [`/run/user/${process.getuid()}/docker.sock`] : []),
  ];
  const socket = candidates.find((candidate) => existsSync(candidate));
  return socket
    ? pingSocket(socket)
    : { ok: false, reason: 'DOCKER_HOST is unset and /var/run/docker.sock does not exist' };
}

function pingSocket(socketPath: string): Promise<DockerEngine> {
  if (!existsSync(socketPath)) return Promise.resolve({ ok: false, reason: `${socketPath} does not exist` });
  return ping(`unix://${socketPath}`, (done) => http.get({ socketPath, path: '/_ping' }, done));
}

function pingTcp(url: URL): Promise<DockerEngine> {
  const tls = Boolean(process.env.DOCKER_TLS_VERIFY);
  const host = url.hostname;
  const port = Number(url.port || (tls ? 2376 : 2375));
  if (!tls) return ping(url.href, (done) => http.get({ host, port, path: '/_ping' }, done));
  const certPath = process.env.DOCKER_CERT_PATH ?? path.join(os.homedir(), '.docker');
  let credentials: { ca: Buffer; cert: Buffer; key: Buffer };
  try {
    const read = (name: string) => readFileSync(path.join(certPath, name));
    credentials = { ca: read('ca.pem'), cert: read('cert.pem'), key: read('key.pem') };
  } catch (error) {
    return Promise.resolve({
      ok: false,
      reason: `DOCKER_TLS_VERIFY is set but the certificates in ${certPath} are unreadable (${messageOf(error)})`,
    });
  }
  return ping(url.href, (done) => https.get({ host, port, path: '/_ping', ...credentials }, done));
}

/** GET /_ping with a hard deadline: a wedged engine must not hang the test run. */
function ping(
  endpoint: string,
  get: (done: (response: http.IncomingMessage) => void) => http.ClientRequest,
): Promise<DockerEngine> {
  return new Promise((resolve) => {
    const request = get((response) => {
      response.resume();
      clearTimeout(timer);
      resolve(
        response.statusCode === 200
          ? { ok: true }
          : { ok: false, reason: `${endpoint}/_ping answered HTTP ${response.statusCode}` },
      );
    });
    const timer = setTimeout(() => {
      request.destroy();
      resolve({ ok: false, reason: `${endpoint} did not answer /_ping within ${DOCKER_PING_TIMEOUT_MS} ms` });
    }, DOCKER_PING_TIMEOUT_MS);
    request.on('error', (error) => {
      clearTimeout(timer);
      resolve({ ok: false, reason: `${endpoint}: ${error.message}` });
    });
  });
}

/** scripts/container-engine.sh builds the same name, so this build then finds every layer cached. */
const CONTAINER_IMAGE = `localhost/order-automation-postgres-cron:${DEFAULT_MAJOR}`;
const CONTAINER_PASSWORD = 'postgres';
/** How long the server may refuse connections after saying it is ready (port mapping, slow hosts). */
const CONTAINER_CONNECT_TIMEOUT_MS = 15_000;

/**
 * ORDER_AUTOMATION_PG_CRON_SOURCE names a pg_cron source tarball (e.g. ../shared/vendor/pg_cron-1.6.7.tar.gz):
 * it is copied into the build context's vendor/ (git-ignored), and the image builds pg_cron from it
 * instead of Debian's package, under a tag of its own. scripts/container-engine.sh does the same.
 */
async function stagePgCronSource(context: string): Promise<{ file: string; tag: string } | undefined> {
  const source = process.env.ORDER_AUTOMATION_PG_CRON_SOURCE;
  if (!source) return undefined;
  const file = path.basename(source);
  if (!/^pg_cron-[0-9][0-9A-Za-z.-]*\.tar\.gz$/.test(file)) {
    throw new Error(`ORDER_AUTOMATION_PG_CRON_SOURCE=${source}: expected a pg_cron-<version>.tar.gz source tarball`);
  }
  await copyFile(source, path.join(context, 'vendor', file));
  return { file, tag: file.replace(/\.tar\.gz$/, '') };
}

export async function containerDatabase(log: (line: string) => void): Promise<Database> {
  // Loaded only now: importing testcontainers is slow and it talks to the engine.
  // It honours TESTCONTAINERS_RYUK_DISABLED itself; without Ryuk nothing reaps our container, so stop() removes it.
  const { GenericContainer, Wait } = await import('testcontainers');
  const context = fileURLToPath(new URL('../../docker/postgres-cron/', import.meta.url));
  const cronSource = await stagePgCronSource(context);
  const imageName = cronSource ? `${CONTAINER_IMAGE}-${cronSource.tag}` : CONTAINER_IMAGE;
  log(`building ${imageName} from docker/postgres-cron (cached after the first build)`);
  const buildStarted = Date.now();
  // The default pull policy never pulls an image that exists locally: on a machine without a
  // registry, the base that container-engine.sh imported under the Dockerfile's FROM name is used.
  const image = await GenericContainer.fromDockerfile(context)
    .withBuildArgs(cronSource ? { PG_CRON_SOURCE: cronSource.file } : {})
    .build(imageName, { deleteOnExit: false });
  log(`image ready in ${Date.now() - buildStarted} ms; starting the pg_cron container`);
  const startStarted = Date.now();
  const container = await image
    // Trust, like the local throwaway cluster: tests log in as roles they create, without passwords.
    .withEnvironment({
      POSTGRES_USER: 'postgres',
      POSTGRES_PASSWORD: CONTAINER_PASSWORD,
      POSTGRES_DB: 'postgres',
      POSTGRES_HOST_AUTH_METHOD: 'trust',
    })
    .withExposedPorts(5432)
    // Not the health check: Podman without systemd never runs it. Not forListeningPorts either: it
    // execs three commands into the container every 100 ms, and on Podman each exec leaves conmon
    // processes behind for five minutes. The entrypoint creates the cluster in single-user mode, so
    // only the final server prints this line, once; connecting below proves the mapped port.
    .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 1))
    .withStartupTimeout(120_000)
    .start();
  const address = `${container.getHost()}:${container.getMappedPort(5432)}`;
  // POSTGRES_DB is cron.database_name (the entrypoint sets it so): the URL names the cron database.
  const url = `postgres://postgres:${CONTAINER_PASSWORD}@${address}/postgres`;
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= container.stop({ remove: true, removeVolumes: true }).then(() => {}));
  try {
    const cronDatabase = await untilConnected(
      () => readCronDatabase(url, { createExtension: true }),
      CONTAINER_CONNECT_TIMEOUT_MS,
    );
    log(`pg_cron container ready at ${address} in ${Date.now() - startStarted} ms`);
    return { provider: 'testcontainers', url, cronDatabase, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Retries `attempt` while the server cannot take connections yet (refused, reset, starting up). */
async function untilConnected<T>(attempt: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      const code = (error as { code?: string }).code;
      const transient = code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === '57P03';
      if (!transient || Date.now() >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
