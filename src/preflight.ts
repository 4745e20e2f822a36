// What a role needs to install the package and schedule its jobs, checked before anything is applied:
// on managed PostgreSQL the installing role is no superuser, and a right it lacks would otherwise
// surface half-way as "permission denied" with no hint of the GRANT that fixes it. The same facts
// feed `doctor`, which prints them with the lines to run.
import type pg from 'pg';

/** Something the role lacks, and the exact lines that give it. */
export interface Fix {
  /** Where to run the lines and as whom, e.g. 'in database "postgres", as a superuser'. */
  where: string;
  lines: string[];
}

export interface Finding {
  id: string;
  /** One sentence: what is wrong, and why it matters. */
  summary: string;
  fix: Fix;
}

/** SQL identifier quoting (only where a line to run names a role or database). */
export function ident(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replaceAll('"', '""')}"`;
}

/**
 * The functions of pg_cron the installer calls, per placement. pg_cron grants schedule and unschedule
 * to PUBLIC; 1.4 keeps schedule_in_database and alter_job to superusers until an admin grants them.
 */
export const cronFunctions = {
  /** pg_cron in the package's database: schedule_jobs() and set_schedule() call these there. */
  here: [
    'cron.schedule(text,text,text)',
    'cron.unschedule(bigint)',
    'cron.alter_job(bigint,text,text,text,text,boolean)',
  ],
  /** pg_cron in another database: migrate and setSchedule call these from there. */
  elsewhere: [
    'cron.schedule_in_database(text,text,text,text,text,boolean)',
    'cron.unschedule(bigint)',
    'cron.alter_job(bigint,text,text,text,text,boolean)',
  ],
} as const;

const roles = ['order_automation_app', 'order_automation_admin'] as const;

export interface RoleFacts {
  role: string;
  superuser: boolean;
  createRole: boolean;
  /** The package's two NOLOGIN roles, as they exist in the cluster. */
  rolesExist: boolean[];
  /** Whether `role` may grant order_automation_app to order_automation_admin (ADMIN OPTION, CREATEROLE or superuser). */
  mayGrantAppRole: boolean;
  createInDatabase: boolean;
  createInPublic: boolean;
  /** Whether schema order_automation exists (the package is installed, or half of it). */
  installed: boolean;
}

/** @internal What `role` (default: this session's) may do in this database, read from the catalogs (no privilege needed). */
export async function roleFacts(client: pg.ClientBase, role?: string): Promise<RoleFacts> {
  const { rows } = await client.query<{
    role: string;
    superuser: boolean;
    create_role: boolean;
    roles_exist: boolean[];
    may_grant_app_role: boolean;
    create_in_database: boolean;
    create_in_public: boolean;
    installed: boolean;
  }>(
    `
    with me as (select coalesce($1::pg_catalog.name, current_user) as role)
    select me.role::text as role, r.rolsuper as superuser, r.rolcreaterole as create_role,
           array(select exists (select from pg_catalog.pg_roles x where x.rolname operator(pg_catalog.=) n)
                   from pg_catalog.unnest($2::text[]) with ordinality as t(n, i) order by i) as roles_exist,
           r.rolsuper or r.rolcreaterole
             or coalesce(pg_catalog.pg_has_role(me.role, (select x.oid from pg_catalog.pg_roles x
                                                           where x.rolname operator(pg_catalog.=) $2[1]), 'MEMBER WITH ADMIN OPTION'), false)
             as may_grant_app_role,
           pg_catalog.has_database_privilege(me.role, pg_catalog.current_database(), 'CREATE') as create_in_database,
           coalesce(pg_catalog.has_schema_privilege(me.role, (select n.oid from pg_catalog.pg_namespace n
                                                               where n.nspname operator(pg_catalog.=) 'public'), 'CREATE'), false)
             as create_in_public,
           exists (select from pg_catalog.pg_namespace n where n.nspname operator(pg_catalog.=) 'order_automation') as installed
      from me join pg_catalog.pg_roles r on r.rolname operator(pg_catalog.=) me.role`,
    [role ?? null, roles],
  );
  const row = rows[0]!;
  return {
    role: row.role,
    superuser: row.superuser,
    createRole: row.create_role,
    rolesExist: row.roles_exist,
    mayGrantAppRole: row.may_grant_app_role,
    createInDatabase: row.create_in_database,
    createInPublic: row.create_in_public,
    installed: row.installed,
  };
}

/** What stops `facts.role` from installing the package into `database` (empty: nothing). */
export function installFindings(facts: RoleFacts, database: string): Finding[] {
  if (facts.superuser || facts.installed) return [];
  const role = ident(facts.role);
  const findings: Finding[] = [];
  if (!facts.createInDatabase) {
    findings.push({
      id: 'privilege.create-on-database',
      summary: `role "${facts.role}" may not create schemas in database "${database}", and the package lives in its own schema order_automation`,
      fix: {
        where: `as the owner of database "${database}" or a superuser`,
        lines: [`GRANT CREATE ON DATABASE ${ident(database)} TO ${role};`],
      },
    });
  }
  if (!facts.createInPublic) {
    findings.push({
      id: 'privilege.create-on-public',
      summary: `role "${facts.role}" may not create tables in schema public of database "${database}" (since PostgreSQL 15 only the schema's owner may, unless granted), and the bookstore's tables and the migrations table public.order_automation_migrations live there`,
      fix: {
        where: `in database "${database}", as its owner or a superuser`,
        lines: [`GRANT CREATE ON SCHEMA public TO ${role};`],
      },
    });
  }
  if (facts.rolesExist.every(Boolean) && !facts.mayGrantAppRole) {
    findings.push({
      id: 'privilege.grant-roles',
      summary: `the roles order_automation_app and order_automation_admin exist already (the package is installed in another database of this server), and role "${facts.role}" may not grant the one to the other as the install does`,
      fix: { where: 'as a superuser', lines: [`GRANT order_automation_app TO ${role} WITH ADMIN OPTION;`] },
    });
  }
  return findings;
}

/**
 * Where pg_cron's extension is not in the installer's database, only cron.database_name tells in which
 * database pg_cron runs, and only superusers and members of pg_read_all_settings may read it.
 */
export function readSettingsFinding(role: string, database: string): Finding {
  return {
    id: 'privilege.read-settings',
    summary: `role "${role}" may not read cron.database_name, which names the database pg_cron runs in (its extension is not in "${database}")`,
    fix: { where: 'as a superuser', lines: [`GRANT pg_read_all_settings TO ${ident(role)};`] },
  };
}

/** A warning (not a refusal): the install goes on, but without the app and admin roles. */
export function rolesWarning(facts: RoleFacts): Finding | null {
  if (facts.superuser || facts.createRole || facts.rolesExist.every(Boolean)) return null;
  const missing = roles.filter((_, i) => !facts.rolesExist[i]);
  return {
    id: 'roles',
    summary: `role "${facts.role}" may not create roles (no CREATEROLE), so ${missing.join(' and ')} ${missing.length === 1 ? 'is' : 'are'} not created and nothing of the package is granted to other roles: only "${facts.role}" can use it`,
    fix: {
      where: 'as a superuser, before installing',
      lines: [`ALTER ROLE ${ident(facts.role)} CREATEROLE;`],
    },
  };
}

/** @internal Privileges `role` lacks on pg_cron in the database the client is connected to (pg_cron's). */
export async function cronFindings(
  cron: pg.ClientBase,
  role: string,
  placement: keyof typeof cronFunctions,
): Promise<Finding[]> {
  const { rows } = await cron.query<{
    superuser: boolean;
    extension: boolean;
    usage: boolean | null;
    functions: (boolean | null)[];
  }>(
    `
    select r.rolsuper as superuser,
           -- The extension, not a schema named cron that any role with CREATE could have made.
           exists (select from pg_catalog.pg_extension e where e.extname operator(pg_catalog.=) 'pg_cron') as extension,
           pg_catalog.has_schema_privilege(r.rolname, (select n.oid from pg_catalog.pg_namespace n
                                                        where n.nspname operator(pg_catalog.=) 'cron'), 'USAGE') as usage,
           -- Found through the catalog: naming them would need USAGE on schema cron, which may be missing.
           array(select (select pg_catalog.has_function_privilege(r.rolname, p.oid, 'EXECUTE') from pg_catalog.pg_proc p
                          where p.proname operator(pg_catalog.=) pg_catalog.split_part(pg_catalog.split_part(f, '(', 1), '.', 2)
                            and p.oid::pg_catalog.regprocedure::pg_catalog.text operator(pg_catalog.=) f)
                   from pg_catalog.unnest($2::text[]) with ordinality as t(f, i) order by i) as functions
      from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) $1`,
    [role, cronFunctions[placement]],
  );
  const row = rows[0];
  if (!row || row.superuser) return [];
  const database = (await cron.query<{ db: string }>('select pg_catalog.current_database()::text as db')).rows[0]!.db;
  const where = `in database "${database}", as a superuser`;
  if (!row.extension || row.usage === null) {
    // No schema cron: the extension is not created, and only a superuser may create it.
    return [
      {
        id: 'pg_cron.extension',
        summary: `the pg_cron extension is not created in database "${database}", where pg_cron runs, and only a superuser may create it`,
        fix: { where, lines: ['CREATE EXTENSION pg_cron;'] },
      },
    ];
  }
  const findings: Finding[] = [];
  if (!row.usage) {
    findings.push({
      id: 'privilege.cron-schema',
      summary: `role "${role}" may not use schema cron in database "${database}", where pg_cron keeps its jobs`,
      fix: { where, lines: [`GRANT USAGE ON SCHEMA cron TO ${ident(role)};`] },
    });
  }
  cronFunctions[placement].forEach((signature, i) => {
    if (row.functions[i] === false) {
      findings.push({
        id: `privilege.${signature.slice(0, signature.indexOf('('))}`,
        summary: `role "${role}" may not call ${signature.slice(0, signature.indexOf('('))} in database "${database}" (${purpose[signature]})`,
        fix: { where, lines: [`GRANT EXECUTE ON FUNCTION ${signature} TO ${ident(role)};`] },
      });
    }
  });
  return findings;
}

const purpose: Record<string, string> = {
  'cron.schedule(text,text,text)': 'it creates the jobs',
  'cron.schedule_in_database(text,text,text,text,text,boolean)':
    'it creates the jobs of another database; pg_cron 1.4 grants it to superusers only',
  'cron.unschedule(bigint)': 'it removes the jobs',
  'cron.alter_job(bigint,text,text,text,text,boolean)':
    'it sets, pauses and resumes the jobs; pg_cron 1.4 grants it to superusers only',
};

/** The findings as one paragraph: what is missing and every line to run, in order. */
export function paragraph(intro: string, findings: Finding[]): string {
  return [intro, ...findings.map((f) => `${f.summary}: ${f.fix.where}, run ${f.fix.lines.join(' ')}`)].join(' ');
}
