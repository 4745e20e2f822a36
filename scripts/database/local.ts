// Provider "local": a cluster made with initdb and run with pg_ctl from the PostgreSQL binaries on
// this machine, installing pg_cron with apt-get when it is missing and we may.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { appendFile, chown, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { type Database, DatabaseUnavailableError, type GetDatabaseOptions, readCronDatabase } from './common.js';
import { findOnPath, output, run, type RunAs, type RunOptions, tail } from './processes.js';

export const DEBIAN_PG_ROOT = '/usr/lib/postgresql';

interface PgInstall {
  bindir: string;
  pkglibdir: string;
  major: number;
}

/** `pg_config --bindir` if it has initdb, else the highest /usr/lib/postgresql/<major>/bin. */
export async function findPgInstall(): Promise<PgInstall | undefined> {
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

export async function localDatabase(
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
        '# Written by scripts/database/local.ts before each start.',
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
