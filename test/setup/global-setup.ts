// One PostgreSQL with pg_cron for the whole run (scripts/database/ finds or starts it), and one
// migrated template database that every test file clones.
import type { TestProject } from 'vitest/node';
import { getDatabase } from '../../scripts/database/index.js';
import { migrate } from '../../src/index.js';
import { newClient } from './connections.js';
import { databaseUrl } from './urls.js';

declare module 'vitest' {
  export interface ProvidedContext {
    serverUrl: string;
    cronDatabase: string;
    template: string;
    provider: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = Date.now();
  const database = await getDatabase({
    extensions: ['plpgsql_check'],
    log: (line) => console.log(`[database] ${line}`),
  });
  const template = `oa_template_${process.pid}`;
  const admin = newClient({ connectionString: database.url });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${template}`);
    await admin.query(`create database ${template}`);
    await admin.query('create extension if not exists plpgsql_check').catch(() => undefined);
  } finally {
    await admin.end();
  }
  // The template is migrated without a schedule: clones must not all be run by pg_cron.
  await migrate(databaseUrl(database.url, template), { schedule: false });
  console.log(
    `[database] ${database.provider} PostgreSQL ready, template ${template} migrated in ${Date.now() - started} ms`,
  );
  project.provide('serverUrl', database.url);
  project.provide('cronDatabase', database.cronDatabase);
  project.provide('template', template);
  project.provide('provider', database.provider);
  return async () => {
    const drop = newClient({ connectionString: database.url });
    await drop.connect();
    await drop.query(`drop database if exists ${template} with (force)`).catch(() => undefined);
    await drop.end();
    await database.stop();
  };
}
