// Running the commands the local provider needs (initdb, pg_ctl, apt-get, id, useradd).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

/** Unprivileged account the server runs as when we are root (postgres refuses root). */
export interface RunAs {
  uid: number;
  gid: number;
}

export interface RunOptions {
  user?: RunAs | undefined;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  code: number;
  stdout: string;
  /** stdout and stderr interleaved, for error messages. */
  output: string;
}

/** Runs a command to completion. Rejects only if it cannot be started. */
export function run(command: string, args: string[], { user, cwd, env }: RunOptions = {}): Promise<RunResult> {
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
export async function output(command: string, args: string[]): Promise<string | undefined> {
  const result = await run(command, args).catch(() => undefined);
  return result?.code === 0 ? result.stdout.trim() : undefined;
}

export function findOnPath(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, command);
    if (dir && existsSync(candidate)) return candidate;
  }
  return undefined;
}

export function tail(text: string, lines = 20): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}
