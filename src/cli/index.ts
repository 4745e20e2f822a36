#!/usr/bin/env node
// The order-automation command: install the package, look at the automation, run it by hand, change
// its settings, read the order history. This file reads the command line, runs the command and turns
// every failure into one paragraph and an exit code; commands.ts holds the commands.
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { DatabaseUnreachableError, OrderAutomationError } from '../index.js';
import { checkOptions, databaseUrl, options, secretsOf, urlSource, UsageError } from './args.js';
import { commands } from './commands/index.js';
import { commandUsage, json, oneLine, sentence, usage } from './output.js';

export interface Io {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

function version(): string {
  // Two levels up from both src/cli/index.ts (tsx) and dist/cli/index.js (built).
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Runs the command line `argv` (without node and the script); returns the exit code. */
export async function main(argv: string[], io: Io = process): Promise<number> {
  const secrets = secretsOf(argv);
  const redact = (text: string) => secrets.reduce((t, secret) => t.replaceAll(secret, '***'), text);
  const fail = (text: string) => io.stderr.write(`${redact(text)}\n`);
  try {
    const { values, positionals, tokens } = parseArgs({
      args: argv,
      options,
      allowPositionals: true,
      strict: false,
      tokens: true,
    });
    const [name, ...args] = positionals;
    // Own properties only: "__proto__", "constructor" or "toString" is no command.
    const command = name !== undefined && Object.hasOwn(commands, name) ? commands[name] : undefined;
    if (name !== undefined && !command)
      throw new UsageError(`unknown command "${name}"; the commands are ${Object.keys(commands).join(', ')}`);
    checkOptions(tokens, name, command?.options ?? []);
    if (values.version) {
      io.stdout.write(`${version()}\n`);
      return 0;
    }
    if (values.help) {
      io.stdout.write(command ? commandUsage(command) : usage(Object.values(commands)));
      return 0;
    }
    if (!command) throw new UsageError(`no command given; the commands are ${Object.keys(commands).join(', ')}`);
    const url = databaseUrl(values['database-url']);
    // Progress goes to stderr, so that stdout holds only the result (and stays valid JSON with --json).
    const {
      data,
      text,
      exitCode = 0,
    } = await command.run({
      url,
      args,
      values,
      log: (line) => fail(line),
      print: (line) => io.stdout.write(`${line}\n`),
    });
    if (data !== undefined) io.stdout.write(`${values.json ? json(data, 2) : text}\n`);
    return exitCode;
  } catch (error) {
    if (error instanceof UsageError) {
      fail(`order-automation: ${oneLine(sentence(error.message))}\nRun order-automation --help for usage.`);
      return 2;
    }
    if (error instanceof OrderAutomationError || error instanceof pg.DatabaseError) {
      // The server's own errors (a database not migrated, say) are not bugs of this program: no stack either.
      const hint =
        error.hint ??
        (error instanceof DatabaseUnreachableError
          ? `Check the server and the database URL (${urlSource(argv)}).`
          : undefined) ??
        (error instanceof pg.DatabaseError && ['3F000', '42P01', '42883'].includes(error.code ?? '')
          ? 'Is order-automation installed in this database? Install it with order-automation migrate.'
          : undefined);
      fail(`order-automation: ${oneLine(sentence(error.message))}${hint ? ` ${oneLine(sentence(hint))}` : ''}`);
      return 1;
    }
    fail(`order-automation: unexpected error\n${error instanceof Error ? error.stack : String(error)}`);
    return 1;
  }
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) process.exitCode = await main(process.argv.slice(2));
