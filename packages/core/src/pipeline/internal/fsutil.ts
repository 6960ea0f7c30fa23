/** File helpers of the embedding run: atomic writes, fsync'd renames, hashing. @module */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';

/** Suffix of every temporary file the run writes; leftovers are removed when a run starts. */
export const TMP_SUFFIX = '.tmp';

/** Writes `data` to `file` atomically: a temporary file in the same folder, fsync, rename. */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${file}.${process.pid}${TMP_SUFFIX}`;
  const fh = await fs.open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
}

/** fsyncs a folder so that renames inside it are durable (best effort: not every platform allows it). */
export async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await fs.open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // not supported here (e.g. Windows): renames are still atomic
  }
}

/** True when `p` exists. */
export async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(() => true, () => false);
}

/** Streams a file once: its sha256, its size, and its count of non-blank lines (for JSONL totals). */
export async function fingerprintFile(file: string): Promise<{ sha256: string; size: number; lines: number }> {
  const hash = createHash('sha256');
  let size = 0;
  let lines = 0;
  let blank = true;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    const buf = chunk as Buffer;
    hash.update(buf);
    size += buf.length;
    for (let i = 0; i < buf.length; i++) {
      const c = buf[i]!;
      if (c === 10) {
        if (!blank) lines++;
        blank = true;
      } else if (c !== 13 && c !== 32 && c !== 9) {
        blank = false;
      }
    }
  }
  if (!blank) lines++;
  return { sha256: hash.digest('hex'), size, lines };
}

/** sha256 of a string. */
export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** JSON with object keys sorted at every level: a stable text to hash. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return Object.fromEntries(Object.keys(v as object).sort().map((k) => [k, (v as Record<string, unknown>)[k]]));
    }
    return v;
  });
}

/** Removes the temporary files a killed run may have left in `dir`. */
export async function removeTempFiles(dir: string): Promise<void> {
  for (const f of await fs.readdir(dir).catch(() => [] as string[])) {
    if (f.endsWith(TMP_SUFFIX)) await fs.rm(path.join(dir, f), { force: true });
  }
}
