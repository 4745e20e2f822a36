// Finds a PostgreSQL server with pg_cron for the test suite and `npm start`, in this order:
// DATABASE_URL, else a testcontainers container, else a cluster started from the PostgreSQL
// binaries on this machine. Each provider has a file of its own beside this one.
import {
  type Database,
  DatabaseUnavailableError,
  DEFAULT_MAJOR,
  type GetDatabaseOptions,
  messageOf,
  type Provider,
} from './common.js';
import { DEBIAN_PG_ROOT, findPgInstall, localDatabase } from './local.js';
import { containerDatabase, detectDockerEngine } from './testcontainers.js';
import { urlDatabase } from './url.js';

export { type Database, DatabaseUnavailableError, type GetDatabaseOptions, type Provider } from './common.js';

const PROVIDERS: readonly Provider[] = ['url', 'testcontainers', 'local'];

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
