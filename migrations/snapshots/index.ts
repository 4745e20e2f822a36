// Reading the frozen snapshots. A snapshot is a list of sections written by scripts/snapshot.ts, each
// headed by a line naming a file of sql/:
//   -- >>> <file>                          the file as released: applied by the migration
//   -- >>> <file> recorded sha256:<hex>    a table file the migration changes with its own ALTERs: not
//                                          applied, only recorded so the next release compares against it
//   -- >>> <file> from <release>           applied again unchanged, as frozen in that earlier release
// 0001 holds every file and 0002 every routine file; later releases hold only what changed, so a file's
// released version is its section in the newest release that holds it. node-pg-migrate ignores this folder.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';

export interface Section {
  file: string;
  /** The frozen text, for an applied section. */
  text?: string;
  /** The fingerprint of a recorded (not applied) table file. */
  recorded?: string;
  /** The earlier release whose frozen text this section applies again. */
  from?: string;
}

const dir = new URL('./', import.meta.url);

/** Every release with a snapshot, oldest first. */
export function releases(): string[] {
  return readdirSync(dir)
    .filter((f) => /^\d{4}_\w+\.sql$/.test(f))
    .map((f) => f.replace(/\.sql$/, ''))
    .sort();
}

export function sections(name: string): Section[] {
  const text = readFileSync(new URL(`./${name}.sql`, dir), 'utf8');
  return text
    .split(/^(?=-- >>> )/m)
    .slice(1) // the snapshot's own opening comment
    .map((section) => {
      const [, file, recorded, from] = /^-- >>> (\S+)(?: recorded (sha256:\w+)| from (\d{4}_\w+))?\n/.exec(section)!;
      if (recorded) return { file: file!, recorded };
      if (from) return { file: file!, from };
      return { file: file!, text: section };
    });
}

/** A snapshot whole, or only the applied sections of some files: what 0001 and 0002 apply. */
export function snapshot(name: string, files?: (file: string) => boolean): string {
  if (!files) return readFileSync(new URL(`./${name}.sql`, dir), 'utf8');
  return sections(name)
    .filter((s) => s.text !== undefined && files(s.file))
    .map((s) => s.text)
    .join('');
}

/**
 * A file's version as released before `release` (or as of the newest release), and the release that
 * froze it: the newest earlier section holding its text or its record; undefined for a file never released.
 */
export function released(file: string, before?: string): (Section & { release: string }) | undefined {
  let version: (Section & { release: string }) | undefined;
  for (const release of releases().filter((r) => before === undefined || r < before)) {
    for (const s of sections(release)) if (s.file === file && s.from === undefined) version = { ...s, release };
  }
  return version;
}

/** What a release's migration applies (in `up`): its applied sections, in order. */
export function apply(name: string): string {
  return sections(name)
    .map((s) => (s.from ? sections(s.from).find((t) => t.file === s.file)?.text : s.text) ?? '')
    .join('');
}

/**
 * What a release's `down` applies again: for each file the release applies, its version in the releases
 * before it. Files new in that release have no earlier version: `down` must drop what they create itself.
 */
export function previous(name: string): string {
  return sections(name)
    .filter((s) => s.recorded === undefined)
    .map((s) => released(s.file, name)?.text ?? '')
    .join('');
}

/**
 * What decides whether a file changed: its text without the opening comment (which reaches no database)
 * and surrounding blank lines. Recorded in snapshots, so this must never change.
 */
export function fingerprint(text: string): string {
  const body = text.replace(/^(?:--.*\n|\s*\n)*/, ''); // also the section's own "-- >>>" line
  return 'sha256:' + createHash('sha256').update(body.trim()).digest('hex');
}

/** Routine files (create or replace), as opposed to the table files numbered below 050, applied once. */
export const isRoutineFile = (file: string): boolean => !/^0[0-4]/.test(file);
