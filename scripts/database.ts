// Finds a PostgreSQL server with pg_cron for the test suite and `npm start`
//: DATABASE_URL, else a testcontainers container, else a cluster
// started from the PostgreSQL binaries on this machine.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { appendFile, chown, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export type Provider = 'url' | 'testcontainers' | 'local';

export interface Database {
  provider: Provider;
  /** A superuser's connection string for the cron database; local: postgres://postgres@127.0.0.1:PORT/postgres. */
  url: string;
  /** Value of cron.database_name on that server. */
  cronDatabase: string;
  /** Stops what we started (no-op for 'url'); idempotent. */
  stop(): Promise<void>;
}

export interface GetDatabaseOptions {
  /** Local provider: keep the cluster here, reused across runs and kept on stop. Default: a temp dir deleted on stop. */
  dataDir?: string;
  /** Progress messages. */
  log?: (line: string) => void;
  /** Use this provider, whatever ORDER_AUTOMATION_DB and DATABASE_URL say. */
  provider?: Provider;
  /** Local provider: extensions besides pg_cron to install with apt-get when missing (best effort), e.g. plpgsql_check. */
  extensions?: string[];
}

export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError';
}

const PROVIDERS: readonly Provider[] = ['url', 'testcontainers', 'local'];
/** Used in messages when no PostgreSQL is installed at all; also the container's version. */
const DEFAULT_MAJOR = 15;

export async function getDatabase(options: GetDatabaseOptions = {}): Promise<Database> {
  const log = options.log ?? (() => {});
  // A caller that needs a server of its own to break (the fault tests) asks for one explicitly.
  const forced = options.provider ?? process.env.ORDER_AUTOMATION_DB;
  if (forced) {
    if (!(PROVIDERS as readonly string[]).includes(forced)) {
      throw new DatabaseUnavailableError(
        `ORDER_AUTOMATION_DB is "${forced}"; set it to one of ${PROVIDERS.join(', ')}, or unset it to pick the first that works.`,
      );
    }
    return getForcedDatabase(forced as Provider, options, log);
  }

  if (process.env.DATABASE_URL) {
    // A set DATABASE_URL is a decision: failing loudly beats silently testing elsewhere.
    log('using DATABASE_URL');
    return urlDatabase(process.env.DATABASE_URL).catch((error: unknown) => {
      throw new DatabaseUnavailableError(
        `${messageOf(error)}. Fix it, or unset DATABASE_URL to use a Docker engine or the local PostgreSQL binaries.`,
        { cause: error },
      );
    });
  }

  const reasons: string[] = [];
  const docker = await detectDockerEngine();
  if (docker.ok) {
    try {
      return await containerDatabase(log);
    } catch (error) {
      reasons.push(`Docker: the pg_cron container did not start (${messageOf(error)}).`);
      log(`testcontainers failed, trying local PostgreSQL binaries: ${messageOf(error)}`);
    }
  } else {
    reasons.push(`No Docker engine: ${docker.reason}.`);
  }

  const install = await findPgInstall();
  if (!install) {
    reasons.push(`No local server: no initdb via pg_config or in ${DEBIAN_PG_ROOT}/<major>/bin.`);
    throw new DatabaseUnavailableError(noDatabaseMessage(DEFAULT_MAJOR, reasons));
  }
  try {
    return await localDatabase(install, options, log);
  } catch (error) {
    if (!(error instanceof DatabaseUnavailableError)) throw error;
    reasons.push(`Local: ${error.message}`);
    throw new DatabaseUnavailableError(noDatabaseMessage(install.major, reasons), { cause: error });
  }
}

async function getForcedDatabase(
  provider: Provider,
  options: GetDatabaseOptions,
  log: (line: string) => void,
): Promise<Database> {
  let reason: string;
  try {
    switch (provider) {
      case 'url': {
        const url = process.env.DATABASE_URL;
        if (url) return await urlDatabase(url);
        reason = 'DATABASE_URL is not set: set it to a server with pg_cron in shared_preload_libraries.';
        break;
      }
      case 'testcontainers': {
        const docker = await detectDockerEngine();
        if (docker.ok) return await containerDatabase(log);
        reason = `no Docker engine answered: ${docker.reason}. Start Docker (or Podman, with DOCKER_HOST set to its socket; on Debian, as root: eval "$(scripts/container-engine.sh)").`;
        break;
      }
      case 'local': {
        const install = await findPgInstall();
        if (install) return await localDatabase(install, options, log);
        reason = `no PostgreSQL server binaries were found (no initdb via pg_config or in ${DEBIAN_PG_ROOT}/<major>/bin): install them and pg_cron (Debian/Ubuntu: apt-get install postgresql-${DEFAULT_MAJOR} postgresql-${DEFAULT_MAJOR}-cron).`;
        break;
      }
    }
  } catch (error) {
    throw new DatabaseUnavailableError(`ORDER_AUTOMATION_DB=${provider}, but ${messageOf(error)}`, { cause: error });
  }
  throw new DatabaseUnavailableError(`ORDER_AUTOMATION_DB=${provider}, but ${reason}`);
}

function noDatabaseMessage(major: number, reasons: string[]): string {
  return [
    'No PostgreSQL with pg_cron found: set DATABASE_URL to a server with pg_cron in shared_preload_libraries,',
    'or start a Docker engine, or install the PostgreSQL server binaries and pg_cron',
    `(Debian/Ubuntu: apt-get install postgresql-${major} postgresql-${major}-cron).`,
    ...reasons,
  ].join(' ');
}

// ── url ─────────────────────────────────────────────────────────────────────

async function urlDatabase(url: string): Promise<Database> {
  const cronDatabase = await readCronDatabase(url, { createExtension: false }).catch((error: unknown) => {
    throw new DatabaseUnavailableError(`the server at DATABASE_URL is not usable: ${messageOf(error)}`, {
      cause: error,
    });
  });
  return { provider: 'url', url, cronDatabase, stop: async () => {} };
}

/**
 * Reads cron.database_name, which only exists when pg_cron is preloaded; with
 * createExtension, first installs pg_cron into the database of `url` (ours: the cron database).
 */
async function readCronDatabase(url: string, { createExtension }: { createExtension: boolean }): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    if (createExtension) await client.query('create extension if not exists pg_cron');
    const { rows } = await client.query<{ cron_database_name: string }>(
      `select current_setting('cron.database_name', true) as cron_database_name`,
    );
    const cronDatabase = rows[0]?.cron_database_name;
    if (!cronDatabase)
      throw new Error('pg_cron is not loaded (add it to shared_preload_libraries and restart the server)');
    return cronDatabase;
  } finally {
    await client.end();
  }
}

// ── testcontainers ──────────────────────────────────────────────────────────

const DOCKER_PING_TIMEOUT_MS = 1500;

type DockerEngine = { ok: true } | { ok: false; reason: string };

/**
 * Our own quick probe, so that machines without Docker never load testcontainers
 * (whose runtime discovery can take many seconds to give up).
 */
async function detectDockerEngine(): Promise<DockerEngine> {
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

// Added with deadline precision (pg_cron 1.6 in CI's container pass).
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

async function containerDatabase(log: (line: string) => void): Promise<Database> {
  // Loaded only now: importing testcontainers is slow and it talks to the engine.
  // It honours TESTCONTAINERS_RYUK_DISABLED itself; without Ryuk nothing reaps our container, so stop() removes it.
  const { GenericContainer, Wait } = await import('testcontainers');
  const context = fileURLToPath(new URL('../docker/postgres-cron/', import.meta.url));
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

// ── local binaries ──────────────────────────────────────────────────────────

const DEBIAN_PG_ROOT = '/usr/lib/postgresql';

interface PgInstall {
  bindir: string;
  pkglibdir: string;
  major: number;
}

/** Unprivileged account the server runs as when we are root (postgres refuses root). */
interface RunAs {
  uid: number;
  gid: number;
}

/** `pg_config --bindir` if it has initdb, else the highest /usr/lib/postgresql/<major>/bin. */
async function findPgInstall(): Promise<PgInstall | undefined> {
  const bindir = await output('pg_config', ['--bindir']);
  if (bindir && existsSync(path.join(bindir, 'initdb'))) {
    const pkglibdir = await output('pg_config', ['--pkglibdir']);
    const major = await serverMajor(bindir);
    if (pkglibdir && major) return { bindir, pkglibdir, major };
  }
  const majors = (await readdir(DEBIAN_PG_ROOT).catch(() => []))
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .sort((a, b) => b - a);
  const major = majors.find((candidate) => existsSync(path.join(DEBIAN_PG_ROOT, String(candidate), 'bin', 'initdb')));
  return major === undefined
    ? undefined
    : {
        bindir: path.join(DEBIAN_PG_ROOT, String(major), 'bin'),
        pkglibdir: path.join(DEBIAN_PG_ROOT, String(major), 'lib'),
        major,
      };
}

async function serverMajor(bindir: string): Promise<number | undefined> {
  // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
  const version = await output(path.join(bindir, 'postgres'), ['--version']);
  const match = version?.match(/\(PostgreSQL\)\s+(\d+)/);
  return match ? Number(match[1]) : undefined;
}

/**
 * Installs with apt-get the extension packages the server lacks, when we may: pg_cron always, and the
 * optional ones asked for (plpgsql_check for the tests). Only a missing pg_cron is an error here.
 */
async function ensureExtensions(install: PgInstall, optional: string[], log: (line: string) => void): Promise<void> {
  const wanted = [{ name: 'pg_cron', required: true }, ...optional.map((name) => ({ name, required: false }))]
    .map((e) => ({
      ...e,
      library: path.join(install.pkglibdir, `${e.name}.so`),
      aptPackage: `postgresql-${install.major}-${e.name.replace(/^pg_/, '').replace(/_/g, '-')}`,
    }))
    .filter((e) => !existsSync(e.library));
  if (wanted.length === 0) return;
  const cron = wanted.find((e) => e.required);
  const missing = `PostgreSQL ${install.major} in ${install.bindir} lacks ${wanted.map((e) => `${e.name} (${e.library})`).join(' and ')}`;
  // apt's packages only fit the binaries apt installed.
  const isDebianInstall = install.bindir === path.join(DEBIAN_PG_ROOT, String(install.major), 'bin');
  const aptGet = isDebianInstall && process.getuid?.() === 0 ? findOnPath('apt-get') : undefined;
  const packages = wanted.map((e) => e.aptPackage);
  if (!aptGet) {
    if (!cron) return;
    throw new DatabaseUnavailableError(
      isDebianInstall
        ? `${missing}: install it as root with apt-get install ${packages.join(' ')}.`
        : `${missing}: install pg_cron for that server (on Debian/Ubuntu packages: apt-get install ${cron.aptPackage}).`,
    );
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update'], ['install', '-y', ...packages]]) {
    log(`${missing}; running apt-get ${args.join(' ')}`);
    const result = await run(aptGet, args, { env });
    if (result.code !== 0) {
      throw new DatabaseUnavailableError(
        `${missing}, and apt-get ${args.join(' ')} failed (exit ${result.code}): ${tail(result.output)}`,
      );
    }
  }
  if (cron && !existsSync(cron.library))
    throw new DatabaseUnavailableError(`${missing}, even after apt-get install ${cron.aptPackage}.`);
}

async function localDatabase(
  install: PgInstall,
  options: GetDatabaseOptions,
  log: (line: string) => void,
): Promise<Database> {
  await ensureExtensions(install, options.extensions ?? [], log);
  const persistent = options.dataDir !== undefined;
  // base holds data/, postgres.log and (when its path is short enough) the server's unix socket.
  let base: string;
  if (options.dataDir !== undefined) {
    base = path.resolve(options.dataDir);
    await mkdir(base, { recursive: true });
  } else {
    base = await mkdtemp(path.join(os.tmpdir(), 'order-automation-pg-'));
  }
  const dataPath = path.join(base, 'data');
  const pgCtl = path.join(install.bindir, 'pg_ctl');
  const asServer: RunOptions = { cwd: base };
  let socketDir = base;
  let startedHere = false;

  // A crashed or interrupted test run must not leave a server or files behind.
  const removeOnExit = () => {
    spawnSync(pgCtl, ['stop', '-D', dataPath, '-m', 'immediate', '-w'], {
      ...asServer.user,
      cwd: base,
      stdio: 'ignore',
    });
    rmSync(base, { recursive: true, force: true });
    rmSync(socketDir, { recursive: true, force: true });
  };
  if (!persistent) process.on('exit', removeOnExit);

  const stopServer = async () => {
    if (startedHere) {
      const result = await run(pgCtl, ['stop', '-D', dataPath, '-m', 'fast', '-w'], asServer);
      if (result.code !== 0 && !/Is server running\?/.test(result.output)) {
        throw new Error(`pg_ctl stop failed for ${dataPath} (exit ${result.code}): ${tail(result.output)}`);
      }
    }
    if (socketDir !== base) await rm(socketDir, { recursive: true, force: true });
    if (!persistent) {
      await rm(base, { recursive: true, force: true });
      process.off('exit', removeOnExit);
    }
  };

  try {
    asServer.user = await serverUser(dataPath);
    if (asServer.user) await chown(base, asServer.user.uid, asServer.user.gid);
    let port: number | undefined;
    if (existsSync(path.join(dataPath, 'PG_VERSION'))) {
      await checkClusterVersion(dataPath, install);
      port = await runningPort(pgCtl, dataPath, asServer);
      if (port !== undefined)
        log(`reusing the PostgreSQL ${install.major} already running for ${dataPath} on port ${port}`);
    } else {
      log(`creating a PostgreSQL ${install.major} cluster in ${dataPath}`);
      await initCluster(install, dataPath, persistent, asServer);
    }
    if (port === undefined) {
      socketDir = await socketDirFor(base, asServer.user);
      port = await startCluster(pgCtl, base, socketDir, asServer);
      startedHere = true;
      log(
        `PostgreSQL ${install.major} with pg_cron listening on 127.0.0.1:${port} (log: ${path.join(base, 'postgres.log')})`,
      );
    }
    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    const cronDatabase = await readCronDatabase(url, { createExtension: true });
    let stopping: Promise<void> | undefined;
    return { provider: 'local', url, cronDatabase, stop: () => (stopping ??= stopServer()) };
  } catch (error) {
    await stopServer().catch(() => {});
    throw error;
  }
}

/**
 * The account that runs initdb/pg_ctl: ourselves unless we are root. An existing
 * cluster keeps its owner (postgres only runs as the owner of its data directory);
 * otherwise the system user postgres, else a system user created for us.
 */
async function serverUser(dataPath: string): Promise<RunAs | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const owner = await stat(dataPath).catch(() => undefined);
  if (owner && owner.uid !== 0) return { uid: owner.uid, gid: owner.gid };
  for (const name of ['postgres', 'order_automation']) {
    const uid = await output('id', ['-u', name]);
    const gid = await output('id', ['-g', name]);
    if (uid && gid) return { uid: Number(uid), gid: Number(gid) };
  }
  // A concurrent run may create it first; `id` below is the judge.
  await run('useradd', ['--system', '--no-create-home', '--user-group', 'order_automation']).catch(() => undefined);
  const uid = await output('id', ['-u', 'order_automation']);
  const gid = await output('id', ['-g', 'order_automation']);
  if (!uid || !gid) {
    throw new DatabaseUnavailableError(
      'PostgreSQL refuses to run as root and there is no system user "postgres" (useradd could not create "order_automation"): create one, or run as a normal user.',
    );
  }
  return { uid: Number(uid), gid: Number(gid) };
}

async function checkClusterVersion(dataPath: string, install: PgInstall): Promise<void> {
  const clusterMajor = Number((await readFile(path.join(dataPath, 'PG_VERSION'), 'utf8')).trim());
  if (clusterMajor !== install.major) {
    throw new DatabaseUnavailableError(
      `${dataPath} holds a PostgreSQL ${clusterMajor} cluster but the binaries found are PostgreSQL ${install.major} (${install.bindir}): delete that folder to start afresh, or install PostgreSQL ${clusterMajor}.`,
    );
  }
}

/** Port of a postmaster already serving dataPath (line 4 of postmaster.pid), if any. */
async function runningPort(pgCtl: string, dataPath: string, asServer: RunOptions): Promise<number | undefined> {
  const pidFile = path.join(dataPath, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  // Exit 0 = running; a pid file left by a crash gives 3.
  if ((await run(pgCtl, ['status', '-D', dataPath], asServer)).code !== 0) return undefined;
  const port = Number((await readFile(pidFile, 'utf8')).split('\n')[3]);
  return Number.isInteger(port) && port > 0 ? port : undefined;
}

const RUNTIME_CONF = 'order_automation_runtime.conf';

async function initCluster(
  install: PgInstall,
  dataPath: string,
  persistent: boolean,
  asServer: RunOptions,
): Promise<void> {
  const initdb = path.join(install.bindir, 'initdb');
  // Skipping initdb's fsync only risks a cluster we throw away anyway.
  const args = [
    '-U',
    'postgres',
    '--auth=trust',
    '-E',
    'UTF8',
    '--no-locale',
    '-D',
    dataPath,
    ...(persistent ? [] : ['--no-sync']),
  ];
  const result = await run(initdb, args, asServer);
  if (result.code !== 0) throw new Error(`initdb failed for ${dataPath} (exit ${result.code}): ${tail(result.output)}`);
  const settings = [
    '',
    '# order-automation: pg_cron and local-cluster settings',
    "listen_addresses = '127.0.0.1'",
    "shared_preload_libraries = 'pg_cron'",
    "cron.database_name = 'postgres'",
    'cron.use_background_workers = off',
    'max_connections = 200',
    'max_locks_per_transaction = 256',
    // The persistent cluster holds `npm start` data that should survive an OS crash.
    ...(persistent ? [] : ['fsync = off', 'synchronous_commit = off', 'full_page_writes = off']),
    // Port and socket change on every start; they live in a file rewritten then.
    `include_if_exists = '${RUNTIME_CONF}'`,
    '',
  ];
  await appendFile(path.join(dataPath, 'postgresql.conf'), settings.join('\n'));
}

/** The socket path (dir + "/.s.PGSQL.NNNNN") must fit in sun_path's 108 bytes. */
async function socketDirFor(base: string, user: RunAs | undefined): Promise<string> {
  if (Buffer.byteLength(base) <= 90) return base;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'order-automation-sock-'));
  if (user) await chown(dir, user.uid, user.gid);
  return dir;
}

/** Starts the cluster on a free port, retrying when another process grabs the port first. */
async function startCluster(pgCtl: string, base: string, socketDir: string, asServer: RunOptions): Promise<number> {
  const dataPath = path.join(base, 'data');
  const logPath = path.join(base, 'postgres.log');
  const runtimeConf = path.join(dataPath, RUNTIME_CONF);
  // pg_cron keeps the port each job was scheduled with (cron.job.nodeport): a kept cluster comes back
  // on the port it had, when it is free, or its jobs could no longer connect.
  const previous = Number(/^port = (\d+)$/m.exec(await readFile(runtimeConf, 'utf8').catch(() => ''))?.[1] ?? 0);
  for (let attempt = 1; ; attempt++) {
    const port = attempt === 1 && previous > 0 && (await portIsFree(previous)) ? previous : await freePort();
    const quoted = `'${socketDir.replaceAll("'", "''")}'`;
    await writeFile(
      runtimeConf,
      [
        '# Written by scripts/database.ts before each start.',
        `port = ${port}`,
        `unix_socket_directories = ${quoted}`,
        // pg_cron's own connections then use the socket, where auth is trust.
        `cron.host = ${quoted}`,
        '',
      ].join('\n'),
    );
    if (asServer.user) await chown(runtimeConf, asServer.user.uid, asServer.user.gid);
    const logOffset = (await stat(logPath).catch(() => undefined))?.size ?? 0;
    const result = await run(pgCtl, ['start', '-D', dataPath, '-l', logPath, '-w', '-t', '60'], asServer);
    if (result.code === 0) return port;
    const serverLog = (await readFile(logPath).catch(() => Buffer.alloc(0))).subarray(logOffset).toString('utf8');
    if (attempt < 3 && /Address already in use/.test(serverLog)) continue;
    throw new Error(
      `pg_ctl start failed for ${dataPath} (exit ${result.code}): ${tail(result.output)}\n${logPath}:\n${tail(serverLog)}`,
    );
  }
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

// ── processes ───────────────────────────────────────────────────────────────

interface RunOptions {
  user?: RunAs | undefined;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

interface RunResult {
  code: number;
  stdout: string;
  /** stdout and stderr interleaved, for error messages. */
  output: string;
}

/** Runs a command to completion. Rejects only if it cannot be started. */
function run(command: string, args: string[], { user, cwd, env }: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...user, cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
      output += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, output }));
  });
}

/** Trimmed stdout of a successful command; undefined if it is missing or fails. */
async function output(command: string, args: string[]): Promise<string | undefined> {
  const result = await run(command, args).catch(() => undefined);
  return result?.code === 0 ? result.stdout.trim() : undefined;
}

function findOnPath(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, command);
    if (dir && existsSync(candidate)) return candidate;
  }
  return undefined;
}

function tail(text: string, lines = 20): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
