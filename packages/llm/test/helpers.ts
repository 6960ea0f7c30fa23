/** Shared by the llm tests: the vendored decoder fixtures and small comparison helpers. */
import path from 'node:path';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { readSafetensors, selectBackend, type ReadTensor } from '@multimeditron/core';
import { REPO_ROOT, compare } from '../../../test/helpers/fixtures.js';

export const GOLDEN_LLM = path.join(REPO_ROOT, 'test', 'fixtures', 'golden-llm');
export const LLAMA_TINY = path.join(GOLDEN_LLM, 'llama-tiny');
export const QWEN3_TINY = path.join(GOLDEN_LLM, 'qwen3-tiny');
/** tokenizer.json + tokenizer_config.json of the Llama 3 tokenizer (devDependency, never vendored). */
export const LLAMA_TOKENIZER_DIR = path.join(REPO_ROOT, 'node_modules', '@lenml', 'tokenizer-llama3_1', 'models');
/** Tolerances of the fixtures README: 1e-4 abs + 1e-4 rel. */
export const ATOL = 1e-4;
export const RTOL = 1e-4;

export async function useWasm(): Promise<void> {
  await selectBackend({ backend: 'wasm' });
}

const cache = new Map<string, Map<string, ReadTensor>>();
/** The tensors of an expected file (cached). */
export async function expected(file: string): Promise<Map<string, ReadTensor>> {
  let t = cache.get(file);
  if (!t) {
    t = (await readSafetensors(path.join(GOLDEN_LLM, 'expected', file))).tensors;
    cache.set(file, t);
  }
  return t;
}

/** An integer tensor as rows of numbers. */
export function rows(t: ReadTensor): number[][] {
  const [B, T] = t.shape as [number, number];
  const flat = Array.from(t.data as unknown as ArrayLike<number | bigint>, Number);
  return Array.from({ length: B }, (_, b) => flat.slice(b * T, (b + 1) * T));
}

/** Asserts |a - b| <= atol + rtol |b| everywhere and returns the max abs difference. */
export function expectClose(actual: ArrayLike<number>, exp: ArrayLike<number>, what: string, atol = ATOL, rtol = RTOL): number {
  const r = compare(actual, exp, atol, rtol);
  if (!r.ok) throw new Error(`${what}: max abs difference ${r.maxAbs} exceeds ${atol} + ${rtol} rel`);
  return r.maxAbs;
}

/** Zeroes the padded rows of [B, T, H] (the fixtures store them as zeros). */
export function zeroPadRows(h: tf.Tensor3D, mask: number[][]): Float32Array {
  const [B, T, H] = h.shape;
  const d = (h.dataSync() as Float32Array).slice();
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) if (!mask[b]![t]) d.fill(0, (b * T + t) * H, (b * T + t + 1) * H);
  return d;
}

/** A fresh temporary folder. */
export async function tempDir(prefix = 'mm-llm-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Copies a folder (flat). */
export async function copyDir(from: string, to: string): Promise<void> {
  await fs.mkdir(to, { recursive: true });
  for (const f of await fs.readdir(from)) await fs.copyFile(path.join(from, f), path.join(to, f));
}
