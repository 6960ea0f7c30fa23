import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  ModelLoadError, readSafetensors, selectBackend, ShapeError, writeSafetensors, type ReadTensor, type SafetensorsDtype, type WritableTensor,
} from '@multimeditron/core';
import { WhisperEncoder } from '@multimeditron/plugin-audio';
import { CASES, diff, expectedData, tempDir, TOL, WHISPER_DIR } from './helpers.js';

let tmp: string;
let config: Record<string, unknown>;
let weights: Map<string, ReadTensor>;
let features: Float32Array;
let tiny: WhisperEncoder;
const measured: Record<string, number> = {};

beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
  tmp = await tempDir();
  config = JSON.parse(await fs.readFile(path.join(WHISPER_DIR, 'config.json'), 'utf8'));
  weights = (await readSafetensors(path.join(WHISPER_DIR, 'model.safetensors'))).tensors;
  features = new Float32Array(CASES.length * 80 * 3000);
  for (const [i, c] of CASES.entries()) features.set(await expectedData(c.keys['input_features']!), i * 80 * 3000);
  tiny = await WhisperEncoder.fromPretrained(WHISPER_DIR);
});

afterAll(async () => {
  tiny?.dispose();
  await fs.rm(tmp, { recursive: true, force: true });
  process.stdout.write(`plugin-audio encoder parity (max abs): ${JSON.stringify(measured)}\n`);
});

/** Writes a model folder with the given tensors (renamed / re-encoded), plus config.json. */
async function writeModel(
  name: string,
  tensors: Map<string, ReadTensor>,
  options: { rename?: (k: string) => string | undefined; dtype?: SafetensorsDtype; edit?: (k: string, d: Float32Array) => Float32Array; cfg?: object } = {},
): Promise<string> {
  const dir = path.join(tmp, name);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({ ...config, ...(options.cfg ?? {}) }));
  const out = new Map<string, WritableTensor>();
  for (const [k, t] of tensors) {
    const key = options.rename ? options.rename(k) : k;
    if (!key) continue;
    const isFloat = t.data instanceof Float32Array;
    const data = isFloat && options.edit ? options.edit(key, t.data as Float32Array) : t.data;
    out.set(key, { data, shape: t.shape, dtype: isFloat && options.dtype ? options.dtype : t.dtype });
  }
  await writeSafetensors(path.join(dir, 'model.safetensors'), out);
  return dir;
}

/** Runs `enc` on the stored input_features of every case; returns host copies. */
function runAll(enc: WhisperEncoder, hiddenStates = false) {
  const before = tf.memory().numTensors;
  const x = tf.tensor3d(features, [CASES.length, 80, 3000]);
  const out = enc.forward(x, { outputHiddenStates: hiddenStates });
  const host = { last: out.lastHiddenState.dataSync().slice() as Float32Array, hidden: out.hiddenStates?.map((h) => h.dataSync().slice() as Float32Array) };
  tf.dispose([x, out.lastHiddenState, ...(out.hiddenStates ?? [])]);
  expect(tf.memory().numTensors).toBe(before);
  return host;
}

const rows = (a: Float32Array, i: number, per: number) => a.subarray(i * per, (i + 1) * per);

function expectClose(actual: Float32Array, expected: Float32Array, tol: { atol: number; rtol: number }, label: string) {
  let worst = 0;
  let bad = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    worst = Math.max(worst, d);
    if (!(d <= tol.atol + tol.rtol * Math.abs(expected[i]!))) bad++;
  }
  measured[label] = Math.max(measured[label] ?? 0, worst);
  expect({ label, bad }).toEqual({ label, bad: 0 });
}

describe('Whisper encoder (WhisperForConditionalGeneration checkpoint, F32)', () => {
  test('reads config.json: encoder_ffn_dim (2 x d_model here), heads, positions; k_proj has no bias', () => {
    expect(tiny.config).toEqual({ dModel: 32, layers: 2, heads: 4, ffnDim: 64, numMelBins: 80, maxSourcePositions: 1500, activation: 'gelu' });
    expect(tiny.sourcePrefix).toBe('model.encoder.');
    expect(tiny.variables.get('encoder.layers.0.fc1.weight')!.shape).toEqual([64, 32]);
    expect([...tiny.variables.keys()].some((k) => k.includes('k_proj.bias'))).toBe(false);
    expect([...tiny.variables.keys()].some((k) => k.includes('decoder'))).toBe(false);
    expect(tiny.variables.size).toBe(5 + 2 * 15 + 2); // per layer: q, v, out (w + b), k (w), 2 LayerNorms, fc1, fc2
    expect([...tiny.variables.values()].every((v) => !v.trainable)).toBe(true);
  });

  test('last_hidden_state of every case within atol 1e-4 + rtol 1e-4 (batch of 5)', async () => {
    const { last } = runAll(tiny);
    for (const [i, c] of CASES.entries()) {
      expectClose(rows(last, i, 1500 * 32), await expectedData(c.keys['last_hidden_state']!), TOL.last_hidden_state, 'last_hidden_state');
    }
  });

  test('hidden_states.0..2 of long_35s (HF output_hidden_states)', async () => {
    const x = tf.tensor3d(features.subarray(0, 80 * 3000), [1, 80, 3000]);
    const out = tiny.forward(x, { outputHiddenStates: true });
    expect(out.hiddenStates).toHaveLength(3);
    for (let h = 0; h < 3; h++) {
      expectClose(out.hiddenStates![h]!.dataSync() as Float32Array, await expectedData(`long_35s.hidden_states.${h}`), TOL.hidden_states, 'hidden_states');
    }
    expect(diff(out.hiddenStates![2]!.dataSync(), out.lastHiddenState.dataSync()).max).toBe(0);
    tf.dispose([x, out.lastHiddenState, ...out.hiddenStates!]);
  });

  test('embed_positions come from the checkpoint, not recomputed', async () => {
    const dir = await writeModel('shifted-positions', weights, {
      edit: (k, d) => (k.endsWith('embed_positions.weight') ? d.map((v) => v + 0.5) : d),
    });
    const enc = await WhisperEncoder.fromPretrained(dir);
    const x = tf.tensor3d(features.subarray(0, 80 * 3000), [1, 80, 3000]);
    const out = enc.forward(x, { outputHiddenStates: true });
    const h0 = out.hiddenStates![0]!.dataSync();
    const ref = await expectedData('long_35s.hidden_states.0');
    expect(diff(h0, ref.map((v) => v + 0.5)).max).toBeLessThan(1e-5);
    tf.dispose([x, out.lastHiddenState, ...out.hiddenStates!]);
    enc.dispose();
  });

  test('rejects inputs of the wrong shape', () => {
    const x = tf.zeros([1, 80, 2999]);
    expect(() => tiny.forward(x)).toThrow(ShapeError);
    x.dispose();
  });
});

describe('checkpoint forms', () => {
  test('WhisperModel keys (encoder.*), decoder dropped, sharded in two files: same outputs', async () => {
    const dir = path.join(tmp, 'whisper-model-sharded');
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({ ...config, architectures: ['WhisperModel'] }));
    const enc = [...weights].filter(([k]) => k.startsWith('model.encoder.')).map(([k, t]) => [k.slice('model.'.length), t] as const);
    const half = Math.floor(enc.length / 2);
    const shards = [enc.slice(0, half), enc.slice(half)];
    const weightMap: Record<string, string> = {};
    for (const [i, part] of shards.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await writeSafetensors(path.join(dir, file), new Map(part.map(([k, t]) => [k, { data: t.data, shape: t.shape }])));
      for (const [k] of part) weightMap[k] = file;
    }
    await fs.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const e = await WhisperEncoder.fromPretrained(dir);
    expect(e.sourcePrefix).toBe('encoder.');
    expect(diff(runAll(e).last, runAll(tiny).last).max).toBe(0);
    e.dispose();
  });

  test.each(['F16', 'BF16'] as const)('%s checkpoint: weights upcast, stored (rounded) positions used, outputs close', async (dtype) => {
    const dir = await writeModel(`whisper-${dtype}`, weights, { dtype });
    const e = await WhisperEncoder.fromPretrained(dir);
    const stored = (await readSafetensors(path.join(dir, 'model.safetensors'))).tensors;
    for (const [name, v] of e.variables) {
      expect(diff(v.dataSync(), stored.get(`model.${name}`)!.data as Float32Array).max).toBe(0);
    }
    const pos = e.variables.get('encoder.embed_positions.weight')!.dataSync();
    expect(diff(pos, weights.get('model.encoder.embed_positions.weight')!.data as Float32Array).max).toBeGreaterThan(0);
    const d = diff(runAll(e).last, runAll(tiny).last);
    expect(d.mean).toBeLessThan(dtype === 'F16' ? 0.01 : 0.05);
    e.dispose();
  });

  test.each([
    ['a missing key', { rename: (k: string) => (k === 'model.encoder.layers.1.fc2.bias' ? undefined : k) }, /model\.encoder\.layers\.1\.fc2\.bias: missing encoder weight/],
    ['a wrong shape', { cfg: { encoder_ffn_dim: 128 } }, /model\.encoder\.layers\.0\.fc1\.weight: shape \[64,32\] does not match config\.json's \[128,32\]/],
    ['another model type', { cfg: { model_type: 'clip' } }, /model_type is "clip", expected "whisper"/],
    ['an unknown activation', { cfg: { activation_function: 'mish' } }, /unsupported activation_function "mish"/],
    ['no encoder weights', { rename: (k: string) => (k.includes('encoder') ? undefined : k) }, /no Whisper encoder weights found/],
  ])('%s is a ModelLoadError naming the file and key', async (name, opts, message) => {
    const dir = await writeModel(`bad-${name.replace(/\W/g, '')}`, weights, opts as Parameters<typeof writeModel>[2]);
    const before = tf.memory().numTensors;
    const err = await WhisperEncoder.fromPretrained(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toContain(dir);
    expect(tf.memory().numTensors).toBe(before);
  });

  test('a folder without safetensors is a ModelLoadError', async () => {
    const dir = path.join(tmp, 'bin-only');
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
    await fs.writeFile(path.join(dir, 'pytorch_model.bin'), 'x');
    const err = await WhisperEncoder.fromPretrained(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as ModelLoadError).suggestions.join()).toMatch(/convert it to safetensors/);
  });

  test('randomInit builds an encoder of any size without a checkpoint', () => {
    const e = WhisperEncoder.randomInit({ dModel: 16, layers: 1, heads: 2, ffnDim: 24, numMelBins: 8, maxSourcePositions: 10, activation: 'gelu' });
    const x = tf.randomNormal([2, 8, 20]);
    const before = tf.memory().numTensors;
    const out = e.forward(x);
    expect(out.lastHiddenState.shape).toEqual([2, 10, 16]);
    out.lastHiddenState.dispose();
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
    e.dispose();
  });
});
