// Where pg_cron lives and how the installer's code reaches it. Only the server decides where: the
// pg_cron extension in this database, or else cron.database_name as pg_cron defines it. Nothing
// another role can write (a table row, a setting a session may set) ever picks the database, nor
// what is read or run there.
import pg from 'pg';
import { type Db, withDatabase } from './db.js';

export interface CronPlace {
  /** This database. */
  current: string;
  /** pg_cron's database (cron.database_name); null when pg_cron is not loaded, or when this role cannot tell. */
  cronDatabase: string | null;
  /** The pg_cron extension is created in this database. */
  here: boolean;
  /** Whether this role may read cron.database_name (superuser or pg_read_all_settings). */
  canReadSettings: boolean;
}

/**
 * Where pg_cron lives, read without any privilege when the extension is in this database (pg_cron
 * can be created only in cron.database_name), and from pg_settings otherwise: there the setting is
 * visible to superusers and members of pg_read_all_settings only, and trusted only as pg_cron
 * defines it (context postmaster), never as a placeholder a session or ALTER DATABASE set.
 */
export async function cronPlace(client: pg.ClientBase): Promise<CronPlace> {
  const { rows } = await client.query<{
    current: string;
    here: boolean;
    setting: string | null;
    can_read: boolean;
  }>(`
    select pg_catalog.current_database()::pg_catalog.text as current,
           exists (select from pg_catalog.pg_extension e
                     join pg_catalog.pg_depend d on d.refclassid operator(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                                                and d.refobjid operator(pg_catalog.=) e.oid
                     join pg_catalog.pg_namespace n on n.oid operator(pg_catalog.=) d.objid
                    where e.extname operator(pg_catalog.=) 'pg_cron' and d.deptype operator(pg_catalog.=) 'e'
                      and d.classid operator(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
                      and n.nspname operator(pg_catalog.=) 'cron') as here,
           (select s.setting from pg_catalog.pg_settings s
             where s.name operator(pg_catalog.=) 'cron.database_name' and s.context operator(pg_catalog.=) 'postmaster') as setting,
           pg_catalog.pg_has_role(current_user, 'pg_read_all_settings', 'usage') as can_read`);
  const row = rows[0]!;
  return {
    current: row.current,
    cronDatabase: row.here ? row.current : row.setting,
    here: row.here,
    canReadSettings: row.can_read,
  };
}

/** Why pg_cron's database cannot be named, for messages; null when it can. */
export function unknownCronPlace(place: CronPlace): string | null {
  if (place.cronDatabase !== null) return null;
  return place.canReadSettings
    ? 'pg_cron is not loaded on this server (not in shared_preload_libraries)'
    : `cannot tell where pg_cron runs: the pg_cron extension is not created in database "${place.current}" and this role may not read cron.database_name (as a superuser: GRANT pg_read_all_settings TO <role>)`;
}

/**
 * Runs `work` on a connection of its own to pg_cron's database, with nothing but pg_catalog (and
 * the session's own temp schema, for tables only) in its search path.
 */
export async function withCronDatabase<T>(
  db: Db,
  place: CronPlace,
  work: (client: pg.Client) => Promise<T>,
): Promise<T> {
  if (place.cronDatabase === null) throw new Error(unknownCronPlace(place) ?? 'pg_cron cannot be reached');
  return withDatabase(db, place.cronDatabase, async (client) => {
    await client.query('set search_path = pg_catalog, pg_temp');
    return work(client);
  });
}

/** The role that installed the package (owner of schema order_automation): pg_cron runs its jobs as that role. */
export async function installerRole(client: pg.ClientBase): Promise<string | null> {
  const { rows } = await client.query<{ owner: string }>(`
    select pg_catalog.pg_get_userbyid(n.nspowner)::pg_catalog.text as owner from pg_catalog.pg_namespace n
     where n.nspname operator(pg_catalog.=) 'order_automation'`);
  return rows[0]?.owner ?? null;
}

/**
 * Whether this connection sees every job of `owner` in cron.job: pg_cron's row-level security shows
 * other roles only their own jobs, unless they are superusers (or bypass RLS).
 */
export async function seesJobsOf(cron: pg.ClientBase, owner: string): Promise<boolean> {
  const { rows } = await cron.query<{ sees: boolean }>(
    `select current_user operator(pg_catalog.=) $1::pg_catalog.name
         or (select r.rolsuper or r.rolbypassrls from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) current_user) as sees`,
    [owner],
  );
  return rows[0]!.sees;
}

export interface CronJob {
  jobid: string;
  jobname: string;
  schedule: string;
  command: string;
  active: boolean;
}

/** The jobs of `owner` for database `database` whose names are the package's (order_automation.<job>@<database>). */
export async function packageJobsIn(cron: pg.ClientBase, owner: string, database: string): Promise<CronJob[]> {
  const { rows } = await cron.query<CronJob>(
    `select j.jobid::pg_catalog.text as jobid, j.jobname, j.schedule, j.command, j.active from cron.job j
      where j.username operator(pg_catalog.=) $1 and j.database operator(pg_catalog.=) $2
        and pg_catalog.starts_with(j.jobname, 'order_automation.')
        and pg_catalog."right"(j.jobname, pg_catalog.char_length($2) operator(pg_catalog.+) 1) operator(pg_catalog.=) ('@' operator(pg_catalog.||) $2)
      order by j.jobname`,
    [owner, database],
  );
  return rows;
}
