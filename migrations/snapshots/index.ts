// Reading the frozen snapshots: whole, or only the sections of some sql/ files (a later migration's
// down re-applies an earlier release's routines). node-pg-migrate ignores this folder.
import { readFileSync } from 'node:fs';

export function snapshot(name: string, files?: (file: string) => boolean): string {
  const text = readFileSync(new URL(`./${name}.sql`, import.meta.url), 'utf8');
  if (!files) return text;
  // Sections start with "-- >>> <file>" lines written by scripts/snapshot.ts.
  return text
    .split(/^(?=-- >>> )/m)
    .filter((section) => {
      const file = /^-- >>> (\S+)/.exec(section)?.[1];
      return file !== undefined && files(file);
    })
    .join('');
}

/** Routine files (create or replace), as opposed to the table files numbered below 050, applied once. */
export const isRoutineFile = (file: string): boolean => !/^0[0-4]/.test(file);
