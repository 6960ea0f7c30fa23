/** Shared helpers of the plugin-image tests. */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readSafetensors, type ReadTensor } from '@multimeditron/core';
import { golden, manifest } from '../../../test/helpers/fixtures.js';

export { compare, golden, manifest } from '../../../test/helpers/fixtures.js';

/** One `clip.cases` entry of the manifest. */
export interface ClipCase {
  name: string;
  image: string;
  source_mode: string;
  source_height_width: [number, number];
  resized_height_width: [number, number];
  crop_top_left: [number, number];
  keys: Record<string, string>;
}

export const CLIP_DIR = golden('clip-tiny');
export const CASES: ClipCase[] = manifest().clip.cases;
export const TOL = manifest().clip.tolerances;

let expected: Map<string, ReadTensor> | undefined;
/** The tensors of expected/clip-tiny.safetensors (read once). */
export async function expectedTensors(): Promise<Map<string, ReadTensor>> {
  expected ??= (await readSafetensors(golden('expected', 'clip-tiny.safetensors'))).tensors;
  return expected;
}

/** A fresh temporary folder, removed by the returned cleanup function. */
export async function tempDir(prefix = 'mm-image-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Max |a - b| over all elements. */
export { maxAbsDiff as maxAbs } from '../../../test/helpers/fixtures.js';
