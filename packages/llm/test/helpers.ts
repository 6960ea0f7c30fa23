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

/** The first-stage clip-tiny checkpoint (vision hidden 64, 32 px, 16 patches). */
export const CLIP_TINY = path.join(REPO_ROOT, 'test', 'fixtures', 'golden', 'clip-tiny');
export const IMAGES = path.join(REPO_ROOT, 'test', 'fixtures', 'golden', 'images');

/**
 * Writes a MultiMeditron checkpoint in the original's layout from the fixtures: llama-tiny as `model.*`,
 * clip-tiny as `modalities_with_projection.0.feature_extractor.*`, projector-tiny as
 * `modalities_with_projection.0.projector.N.*` (the short form), the Llama 3 tokenizer files, and config.json.
 */
export async function writeTinyCheckpoint(dir: string, options: { projectorForm?: 'short' | 'projection' } = {}): Promise<void> {
  const { writeSafetensors } = await import('@multimeditron/core');
  await fs.mkdir(dir, { recursive: true });
  const tensors = new Map<string, { data: Float32Array; shape: number[]; dtype: 'BF16' | 'F32' }>();
  for (const [k, t] of (await readSafetensors(path.join(LLAMA_TINY, 'model.safetensors'))).tensors) {
    tensors.set(`model.${k}`, { data: t.data as Float32Array, shape: t.shape, dtype: 'BF16' });
  }
  for (const [k, t] of (await readSafetensors(path.join(CLIP_TINY, 'model.safetensors'))).tensors) {
    if ((k.startsWith('vision_model.') || k === 'visual_projection.weight') && t.data instanceof Float32Array) {
      tensors.set(`modalities_with_projection.0.feature_extractor.${k}`, { data: t.data as Float32Array, shape: t.shape, dtype: 'F32' });
    }
  }
  for (const [k, t] of (await readSafetensors(path.join(GOLDEN_LLM, 'projector-tiny.safetensors'))).tensors) {
    const rest = k.replace(/^projector\./, '');
    const key = options.projectorForm === 'projection' ? `projector.projection.${rest}` : `projector.${rest}`;
    tensors.set(`modalities_with_projection.0.${key}`, { data: t.data as Float32Array, shape: t.shape, dtype: 'F32' });
  }
  await writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await fs.copyFile(path.join(LLAMA_TOKENIZER_DIR, f), path.join(dir, f));
  const config = {
    architectures: ['MultiModalModelForCausalLM'],
    model_type: 'multimodal',
    llm_path: LLAMA_TINY,
    modalities: [{ model_type: 'meditron_clip', modality_type: 'image', clip_name: CLIP_TINY, hidden_size: 64, max_batch_size: 32, projection_type: 'mlp' }],
    vocab_size: 128256,
    pad_token_idx: 128004,
    eos_token_idx: 128009,
    padding_side: 'left',
    dtype: 'bfloat16',
  };
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
}
