// The settings descriptor is the one list of settings the module and the command line know: it must
// say what the settings table says (names, interval or integer, nullable), both ways, and what is
// derived from it (the select list, the update statement, the command line's parsing) must reach
// each setting's own column.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { getSettings, settingNames, updateSettings, type Settings } from '../src/index.js';
import { settingsDescriptor, type SettingName } from '../src/settings.js';
import { cliInProcess } from './cli-in-process.js';
import { createTestDatabase, one, type TestDatabase } from './helpers.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => db?.drop());

const keys = Object.keys(settingsDescriptor) as SettingName[];

/** The settings row as the table holds it, by column (intervals as PostgreSQL prints them). */
const row = async () =>
  (await one<{ row: Record<string, unknown> }>(db.pool, 'select to_jsonb(s) as row from order_automation.settings s'))
    .row;

const cli = (argv: string[]) => cliInProcess(argv, db.url);

describe('the settings descriptor', () => {
  test('names every column of order_automation.settings but its primary key, with its type and nullability, and nothing else', async () => {
    const { rows } = await db.pool.query<{ column_name: string; data_type: string; is_nullable: 'YES' | 'NO' }>(`
      select c.column_name, c.data_type, c.is_nullable
        from information_schema.columns c
       where c.table_schema = 'order_automation' and c.table_name = 'settings'
         -- The primary key keeps the table to one row: it is no setting.
         and not exists (select from information_schema.key_column_usage k
                           join information_schema.table_constraints t using (constraint_schema, constraint_name)
                          where t.constraint_type = 'PRIMARY KEY' and k.table_schema = c.table_schema
                            and k.table_name = c.table_name and k.column_name = c.column_name)
       order by c.ordinal_position`);
    expect(rows.length).toBeGreaterThan(0);
    // The state codes are smallint in the table; the descriptor reads and writes them as whole numbers.
    const inTable = rows.map((r) => ({
      column: r.column_name,
      kind: r.data_type === 'smallint' ? 'integer' : r.data_type,
      nullable: r.is_nullable === 'YES',
    }));
    const described = keys.map((key) => {
      const { column, kind, nullable } = settingsDescriptor[key];
      return { column, kind, nullable };
    });
    // Both ways, and in the table's order (the order status and `settings` print them in).
    expect(described).toEqual(inTable);
  });

  test('settingNames is the descriptor under TypeScript names, and every setting has a doc line', () => {
    expect(settingNames).toEqual(Object.fromEntries(keys.map((key) => [key, settingsDescriptor[key].column])));
    for (const key of keys) expect(settingsDescriptor[key].doc, key).toMatch(/^\S.{9,}[^.\n]$/);
  });

  test('each setting changed alone by updateSettings changes its own column, and is read back under its name', async () => {
    const original = await getSettings(db.pool);
    for (const key of keys) {
      const { column, kind, nullable } = settingsDescriptor[key];
      // precision is at most a minute; every other interval takes 7 hours.
      const [intervalSample, intervalRead] = key === 'precision' ? ['7 seconds', '00:00:07'] : ['7 hours', '07:00:00'];
      const sample = { integer: 123, interval: intervalSample, text: 'automation' }[kind];
      const values: (string | number | null)[] = [sample];
      if (nullable) values.push(null);
      for (const value of values) {
        const before = await row();
        const read = await updateSettings(db.pool, { [key]: value } as Partial<Settings>);
        const after = await row();
        expect(after, `${key} = ${value}`).toEqual({ ...before, [column]: after[column] });
        expect(after[column], `${key} = ${value}`).toEqual(
          value === null ? null : { integer: 123, interval: intervalRead, text: 'automation' }[kind],
        );
        // Read back as set: '7 hours', not PostgreSQL's '07:00:00'.
        expect(read[key]).toEqual(value);
        expect(await getSettings(db.pool)).toEqual(read);
      }
      // Back, so that the next one is judged alone (two state codes may not be equal).
      await updateSettings(db.pool, original);
    }
    await updateSettings(db.pool, original);
    expect(await getSettings(db.pool)).toEqual(original);
  });

  test('the command line takes off exactly for the nullable settings, and only whole numbers for the integer ones', async () => {
    const original = await getSettings(db.pool);
    for (const key of keys) {
      const { column, kind, nullable } = settingsDescriptor[key];
      const off = await cli(['settings', 'set', `${column}=off`]);
      if (nullable) {
        expect(off, column).toMatchObject({ code: 0, stderr: '' });
        expect(off.stdout).toMatch(new RegExp(`^${column}\\s+off$`, 'm'));
        expect((await row())[column]).toBeNull();
      } else {
        // Refused by the command line (an integer) or by PostgreSQL (not an interval): nothing changes.
        expect(off, column).toMatchObject({ code: 1, stdout: '' });
        // (bookkeeping, a text: its constraint names the values it takes)
        expect(off.stderr).toMatch(
          kind === 'text'
            ? /^order-automation: setting refused: bookkeeping must be full or automation\. No setting was changed\.\n$/
            : /^order-automation: .*"off".* No setting was changed\.\n$/,
        );
        expect((await row())[column]).not.toBeNull();
      }
      // precision is at most a minute: it takes 2 seconds where the other intervals take 2 hours.
      const [span, spanRead] = column === 'precision' ? ['2 seconds', '00:00:02'] : ['2 hours', '02:00:00'];
      const hours = await cli(['settings', 'set', `${column}=${span}`]);
      if (kind === 'text') {
        // bookkeeping: only its named values pass the table's constraint.
        expect(hours, column).toMatchObject({ code: 1, stdout: '' });
        expect(await cli(['settings', 'set', `${column}=automation`]), column).toMatchObject({ code: 0, stderr: '' });
        expect((await row())[column]).toBe('automation');
      } else if (kind === 'integer') {
        expect(hours, column).toEqual({
          code: 1,
          stdout: '',
          stderr: `order-automation: ${column} must be a whole number, not "2 hours". No setting was changed.\n`,
        });
        expect(await cli(['settings', 'set', `${column}=42`]), column).toMatchObject({ code: 0, stderr: '' });
        expect((await row())[column]).toBe(42);
      } else {
        expect(hours, column).toMatchObject({ code: 0, stderr: '' });
        expect((await row())[column]).toBe(spanRead);
      }
      await updateSettings(db.pool, original);
    }
    await updateSettings(db.pool, original);
    expect(await getSettings(db.pool)).toEqual(original);
  });

  test('settings --help lists every setting with its kind and doc line', async () => {
    const help = await cli(['settings', '--help']);
    expect(help.code).toBe(0);
    for (const key of keys) {
      const { column, kind, nullable, doc } = settingsDescriptor[key];
      const line = `^  ${column}\\s+${kind}${nullable ? ' or off' : ''}\\s+${doc.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;
      expect(help.stdout).toMatch(new RegExp(line, 'm'));
    }
  });
});
