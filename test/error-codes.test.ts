// Every error code the package raises is written in three places a user reads: the SQL that raises
// it, the TypeScript class it becomes, and the README's table. They are held equal here, both ways,
// so a new code cannot reach a user as an untyped error or an undocumented one.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { errorClassBySqlstate, OrderAutomationError, toOrderAutomationError } from '../src/errors.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const sqlDir = `${root}sql/`;
const sqlFiles = readdirSync(sqlDir).filter((f) => f.endsWith('.sql'));

/** The package's codes raised by each sql/ file, read from its statements (full-line comments left out). */
const raisedBy = new Map(
  sqlFiles.map((file) => {
    const code = readFileSync(sqlDir + file, 'utf8')
      .split('\n')
      .filter((line) => !line.trimStart().startsWith('--'))
      .join('\n');
    return [file, [...code.matchAll(/\berrcode\s*=\s*'(OA[0-9A-Z]{3})'/gi)].map((m) => m[1]!.toUpperCase())] as const;
  }),
);
const raised = new Set([...raisedBy.values()].flat());

/** The SQLSTATE table in the header of the schema file: `--   OA001 invalid_transition  ...`. */
const schemaFile = readFileSync(`${sqlDir}020_automation_schema.sql`, 'utf8');
const header = schemaFile.slice(0, schemaFile.search(/^(?!--)/m));
const listedInHeader = new Set([...header.matchAll(/^--\s+(OA[0-9A-Z]{3})\s+\w+/gm)].map((m) => m[1]!));

/** The README's error table: | `OA001` | `InvalidTransitionError` | when |. */
const readme = readFileSync(`${root}README.md`, 'utf8');
const readmeClass = new Map(
  [...readme.matchAll(/^\|\s*`(OA[0-9A-Z]{3})`\s*\|\s*`(\w+)`\s*\|/gm)].map((m) => [m[1]!, m[2]!]),
);

const mapped = new Set(Object.keys(errorClassBySqlstate));
const sorted = (codes: Iterable<string>) => [...codes].sort();

describe('error codes', () => {
  test('the files read raise codes, and the header lists codes (else the checks below check nothing)', () => {
    expect(sqlFiles.length).toBeGreaterThan(0);
    expect(raised.size).toBeGreaterThan(0);
    expect(listedInHeader.size).toBeGreaterThan(0);
  });

  test('every code raised in sql/ becomes its own typed error class', () => {
    const unmapped = [...raisedBy].flatMap(([file, codes]) =>
      codes.filter((code) => !mapped.has(code)).map((code) => `${file}: ${code}`),
    );
    expect(unmapped).toEqual([]);
    for (const code of raised) {
      const error = toOrderAutomationError({ code, message: `raised as ${code}` });
      const Class = errorClassBySqlstate[code]!;
      expect(error, code).toBeInstanceOf(Class);
      expect(Class, code).not.toBe(OrderAutomationError);
      expect(error).toMatchObject({ sqlstate: code, message: `raised as ${code}` });
    }
  });

  test('every code mapped to a class is raised in sql/ or listed in the schema header', () => {
    expect(sorted([...mapped].filter((code) => !raised.has(code) && !listedInHeader.has(code)))).toEqual([]);
  });

  test('the schema header lists exactly the codes mapped to a class, and every code raised', () => {
    expect(sorted(listedInHeader)).toEqual(sorted(mapped));
    expect(sorted([...raised].filter((code) => !listedInHeader.has(code)))).toEqual([]);
  });

  test("the README's error table names every code with its class, and no other code", () => {
    expect(sorted(readmeClass.keys())).toEqual(sorted(new Set([...mapped, ...raised])));
    for (const [code, Class] of Object.entries(errorClassBySqlstate)) {
      expect(readmeClass.get(code), code).toBe(Class.name);
    }
  });
});
