/** Paths of the vendored golden fixtures, shared by every package's tests. */
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const GOLDEN = path.join(REPO_ROOT, 'test', 'fixtures', 'golden');

/** Path inside the golden fixtures. */
export function golden(...parts: string[]): string {
  return path.join(GOLDEN, ...parts);
}

/** The parsed expected/manifest.json. */
export function manifest(): any { // eslint-disable-line @typescript-eslint/no-explicit-any
  return JSON.parse(readFileSync(golden('expected', 'manifest.json'), 'utf8'));
}

/** max |a - b| and whether every element satisfies |a - b| <= atol + rtol * |b|. */
export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol = 0) {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let maxAbs = 0;
  let sumAbs = 0;
  let ok = true;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= atol + rtol * Math.abs(expected[i]!))) ok = false;
    if (d > maxAbs || Number.isNaN(d)) maxAbs = Number.isNaN(d) ? Infinity : d;
    sumAbs += d;
  }
  return { ok, maxAbs, meanAbs: sumAbs / actual.length };
}

/** Largest |a - b| (Infinity if any difference is NaN). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  return compare(a, b, Infinity).maxAbs;
}
