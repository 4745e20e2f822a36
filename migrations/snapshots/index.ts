// Reading the frozen snapshots. A snapshot is a list of sections written by scripts/snapshot.ts, each
// headed by a line naming a file of sql/:
//   -- >>> <file>                          the file's whole text (0001 and 0002, which froze every file)
//   -- >>> <file> diff                     what changed in the file since its previous release: the hunks of
//                                          a unified diff (`diff -U2`); a new file's diff adds every line
//   -- >>> <file> recorded sha256:<hex>    a table file the migration changes with its own ALTERs: not
//                                          applied, only recorded so the next release compares against it
//   -- >>> <file> from <release>           applied again unchanged, as released in that earlier release
// A file's released text is its last whole text with the diffs of every later release applied in order,
// exactly: a diff that does not match to the letter is an error, never applied approximately. Two lines
// of context keep a diff from repeating six lines of an earlier snapshot. node-pg-migrate ignores this folder.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';

export interface Section {
  file: string;
  /** The file's whole text (0001 and 0002 only). */
  text?: string;
  /** The hunks of a unified diff against the file's previous release. */
  diff?: string;
  /** The fingerprint of a recorded (not applied) table file. */
  recorded?: string;
  /** The earlier release whose version of the file this section applies again. */
  from?: string;
}

/** A file as of some release: its text, or only the fingerprint of a recorded table file. */
export interface Version {
  release: string;
  text?: string;
  recorded?: string;
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
  return snapshot(name)
    .split(/^(?=-- >>> )/m)
    .slice(1) // the snapshot's own opening comment
    .map((section) => {
      const head = /^-- >>> (\S+)(?:( diff)| recorded (sha256:[0-9a-f]{64})| from (\d{4}_\w+))?\n/.exec(section);
      if (!head) throw new Error(`${name}: unreadable section heading ${JSON.stringify(section.split('\n')[0])}`);
      const [line, file, diff, recorded, from] = head;
      const body = section.slice(line.length);
      if (diff) return { file: file!, diff: body };
      if (recorded) return { file: file!, recorded };
      if (from) return { file: file!, from };
      return { file: file!, text: normal(body) };
    });
}

/** A snapshot as frozen: what 0001 and 0002, which hold whole files, apply. */
export function snapshot(name: string): string {
  return readFileSync(new URL(`./${name}.sql`, dir), 'utf8');
}

/** A file's version in the releases before `before` (all releases when undefined); undefined if never released. */
export function released(file: string, before?: string): Version | undefined {
  return compose(
    file,
    releases().filter((r) => before === undefined || r < before),
  );
}

/**
 * What a release's migration applies (in `up`): the released text of each file it applies, in order
 * (a file it changed, and the privileges file again).
 */
export function apply(name: string): string {
  const through = releases().filter((r) => r <= name);
  return sections(name)
    .filter((s) => s.recorded === undefined)
    .map((s) => {
      const version = s.from === undefined ? compose(s.file, through) : released(s.file, name);
      if (s.from !== undefined && version?.release !== s.from) {
        throw new Error(
          `${name}: ${s.file} is to be applied again from ${s.from}, but it was last released in ${version?.release}`,
        );
      }
      return `-- >>> ${s.file}\n${version!.text!}`;
    })
    .join('\n');
}

/**
 * What a release's `down` applies again: for each file the release applies, its version in the releases
 * before it. Files new in that release have no earlier version: `down` must drop what they create itself.
 */
export function previous(name: string): string {
  return sections(name)
    .filter((s) => s.recorded === undefined)
    .flatMap((s) => {
      const text = released(s.file, name)?.text;
      return text === undefined ? [] : [`-- >>> ${s.file}\n${text}`];
    })
    .join('\n');
}

/**
 * Every routine file (numbered 050 and up) as released through `name`, whole, in file order: what an
 * install onto an app's own tables (which skips the earlier releases) applies at once.
 */
export function routinesAsOf(name: string): string {
  const through = releases().filter((r) => r <= name);
  const files = [...new Set(through.flatMap((r) => sections(r).map((s) => s.file)))].filter((f) => !/^0[0-4]/.test(f));
  return files
    .sort()
    .flatMap((f) => {
      const text = compose(f, through)?.text;
      return text === undefined ? [] : [`-- >>> ${f}\n${text}`];
    })
    .join('\n');
}

/**
 * A file's text as the snapshots store it and compare it: every byte counts (comments too, so a
 * snapshot never disagrees with sql/), but for trailing whitespace at the end.
 */
export const normal = (text: string): string => text.trimEnd() + '\n';

/** What a recorded table file is compared by. Recorded in snapshots, so this must never change. */
export function fingerprint(text: string): string {
  return 'sha256:' + createHash('sha256').update(normal(text)).digest('hex');
}

/**
 * Applies the hunks of a unified diff to `text`, in order and exactly: each context and removed line must
 * equal the line it stands for, each hunk must start where its heading says. Otherwise it throws, naming
 * `where` (the release and file): the snapshots were edited, or are read in the wrong order.
 */
export function patch(text: string, diff: string, where: string): string {
  const old = text === '' ? [] : normal(text).slice(0, -1).split('\n');
  const lines = diff.split('\n');
  const result: string[] = [];
  const fail = (why: string): never => {
    throw new Error(`${where}: the frozen diff does not apply to the file's previous release: ${why}`);
  };
  let at = 0; // lines of `old` already used
  for (let i = 0; i < lines.length;) {
    const heading = lines[i++]!;
    if (heading === '') continue; // the blank line that ends a section
    const hunk = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/.exec(heading);
    if (!hunk) fail(`expected a hunk heading "@@ -a,b +c,d @@", found ${JSON.stringify(heading)}`);
    const [oldStart, oldCount, newStart, newCount] = hunk!.slice(1).map((n) => (n === undefined ? 1 : Number(n)));
    // A hunk that removes (or adds) nothing names the line after which it stands, not its first line.
    const start = oldCount === 0 ? oldStart! : oldStart! - 1;
    if (start < at || start > old.length) fail(`${heading} starts at line ${oldStart}, out of order or past the end`);
    result.push(...old.slice(at, start));
    at = start;
    if ((newCount === 0 ? newStart! : newStart! - 1) !== result.length) {
      fail(`${heading} says it yields line ${newStart}, but it would yield line ${result.length + 1}`);
    }
    let [olds, news] = [0, 0];
    while (olds < oldCount! || news < newCount!) {
      const line = lines[i++];
      if (line === undefined)
        fail(`${heading} ends after ${olds} of its ${oldCount} old and ${news} of its ${newCount} new lines`);
      // An empty line is an empty context line whose leading space an editor trimmed: nothing to guess.
      const [kind, content] = line === '' ? [' ', ''] : [line![0], line!.slice(1)];
      if (kind === ' ' || kind === '-') {
        if (olds === oldCount || (kind === ' ' && news === newCount)) fail(`${heading} holds more lines than it says`);
        if (old[at] !== content) {
          fail(
            `${heading} expects line ${at + 1} to be ${JSON.stringify(content)}, it is ${JSON.stringify(old[at] ?? '(past the end)')}`,
          );
        }
        at++;
        olds++;
        if (kind === ' ') result.push(content!);
      } else if (kind === '+') {
        if (news === newCount) fail(`${heading} holds more lines than it says`);
        result.push(content!);
      } else {
        fail(`${heading} holds a line that is neither context, removed nor added: ${JSON.stringify(line)}`);
      }
      if (kind !== '-') news++;
    }
  }
  result.push(...old.slice(at));
  return result.length === 0 ? '' : result.join('\n') + '\n';
}

/** Routine files (create or replace), as opposed to the table files numbered below 050, applied once. */
export const isRoutineFile = (file: string): boolean => !/^0[0-4]/.test(file);

/** A file's version after the given releases (oldest first): its last whole text with the later diffs applied. */
function compose(file: string, through: string[]): Version | undefined {
  let version: Version | undefined;
  for (const release of through) {
    for (const s of sections(release)) {
      if (s.file !== file || s.from !== undefined) continue;
      if (s.diff !== undefined && version?.recorded !== undefined) {
        throw new Error(`${release}: ${file} has a diff, but its previous release only recorded it`);
      }
      version =
        s.diff !== undefined
          ? { release, text: patch(version?.text ?? '', s.diff, `${release}: ${file}`) }
          : { release, text: s.text, recorded: s.recorded };
    }
  }
  return version;
}
