#!/usr/bin/env node
// Copies the golden fixtures from ../shared into the repo, so that `npm test` passes on a fresh clone with
// nothing beside it: ../shared/fixtures -> test/fixtures/golden (encoders) and ../shared/fixtures-llm ->
// test/fixtures/golden-llm (decoders, projector, alignment). Only changed files are copied (compared by
// SHA-256); files that vanished upstream are removed. Writes SHA256SUMS in each copy.
// Usage: node scripts/sync-fixtures.mjs [--check] [--shared DIR]
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const check = args.includes('--check');
const sharedIdx = args.indexOf('--shared');
const shared = path.resolve(sharedIdx >= 0 ? args[sharedIdx + 1] : path.join(repo, '..', 'shared'));
const SETS = [
  ['fixtures', 'golden'],
  ['fixtures-llm', 'golden-llm'],
];
const OWN = new Set(['README.md', 'SHA256SUMS']); // our files, not upstream's (upstream README is kept as UPSTREAM-README.md)

async function walk(dir, base = dir) {
  const out = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p, base)));
    else out.push(path.relative(base, p));
  }
  return out.sort();
}
const sha = async (p) => createHash('sha256').update(await fs.readFile(p)).digest('hex');

async function syncSet(src, dst) {
  const target = (rel) => path.join(dst, rel === 'README.md' ? 'UPSTREAM-README.md' : rel);
  try {
    await fs.access(src);
  } catch {
    console.error(`sync-fixtures: ${src} not found; nothing to do`);
    return check ? 1 : 0;
  }
  const files = await walk(src);
  let changed = 0;
  const sums = [];
  for (const rel of files) {
    const from = path.join(src, rel);
    const to = target(rel);
    const h = await sha(from);
    sums.push(`${h}  ${path.relative(dst, to)}`);
    const cur = await sha(to).catch(() => null);
    if (cur === h) continue;
    changed++;
    if (check) {
      console.log(`differs: ${rel}`);
      continue;
    }
    await fs.mkdir(path.dirname(to), { recursive: true });
    await fs.copyFile(from, to);
    console.log(`copied: ${rel}`);
  }
  const keep = new Set(files.map((f) => path.relative(dst, target(f))));
  for (const rel of await walk(dst).catch(() => [])) {
    if (keep.has(rel) || OWN.has(rel)) continue;
    changed++;
    if (check) console.log(`stale: ${rel}`);
    else {
      await fs.rm(path.join(dst, rel));
      console.log(`removed: ${rel}`);
    }
  }
  if (!check) await fs.writeFile(path.join(dst, 'SHA256SUMS'), `${sums.join('\n')}\n`);
  console.log(`${changed} file(s) ${check ? 'differ' : 'updated'}; ${files.length} in ${src}`);
  return changed;
}

let failed = 0;
for (const [from, to] of SETS) failed += await syncSet(path.join(shared, from), path.join(repo, 'test', 'fixtures', to));
process.exit(check && failed ? 1 : 0);
