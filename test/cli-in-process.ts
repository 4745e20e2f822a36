// The order-automation command run in this process (no spawn: ~0.5 s saved per call), its output
// captured, for tests that check what it accepts against the database.
import { main } from '../src/cli/index.js';

export interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the command line `argv` against the database at `url`; returns the exit code and the output. */
export async function cliInProcess(argv: string[], url: string): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const code = await main([...argv, '--database-url', url], {
    stdout: { write: (t: string) => (stdout += t) },
    stderr: { write: (t: string) => (stderr += t) },
  });
  return { code, stdout, stderr };
}
