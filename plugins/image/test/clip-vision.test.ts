import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  ModelLoadError, readSafetensors, selectBackend, ShapeError, writeSafetensors, type ReadTensor, type SafetensorsDtype, type WritableTensor,
} from '@multimeditron/core';
import { ClipVisionEncoder, parseClipVisionConfig } from '@multimeditron/plugin-image';
import { CASES, CLIP_DIR, compare, expectedTensors, maxAbs, tempDir, TOL } from './helpers.js';
import { referenceClip, type RefConfig } from './reference-clip.js';

const REF: RefConfig = { hidden: 64, inter: 128, layers: 2, heads: 4, image: 32, patch: 8, act: 'quick_gelu', eps: 1e-5 };

let clipConfig: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
let clipWeights: Map<string, ReadTensor>;
let pixelBatch: Float32Array;
let tmp: string;

beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
  clipConfig = JSON.parse(await fs.readFile(path.join(CLIP_DIR, 'config.json'), 'utf8'));
  clipWeights = (await readSafetensors(path.join(CLIP_DIR, 'model.safetensors'))).tensors;
  const exp = await expectedTensors();
  pixelBatch = new Float32Array(CASES.length * 3 * 32 * 32);
  CASES.forEach((c, i) => pixelBatch.set(exp.get(c.keys['pixel_values']!)!.data as Float32Array, i * 3 * 32 * 32));
  tmp = await tempDir();
});

afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

/** Writes a model folder: config + the given tensors, optionally re-encoded in `dtype`. */
async function writeModel(name: string, config: object, tensors: Map<string, ReadTensor>, dtype?: SafetensorsDtype): Promise<string> {
  const dir = path.join(tmp, name);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
  const out = new Map<string, WritableTensor>();
  for (const [k, t] of tensors) {
    const isFloat = t.data instanceof Float32Array;
    out.set(k, { data: t.data, shape: t.shape, dtype: isFloat && dtype ? dtype : t.dtype });
  }
  await writeSafetensors(path.join(dir, 'model.safetensors'), out);
  return dir;
}

/** Runs the encoder on the stored pixel_values of every case, returning host copies. */
function runAll(enc: ClipVisionEncoder, hiddenStates = false) {
  const x = tf.tensor4d(pixelBatch, [CASES.length, 3, 32, 32]);
  const out = enc.forward(x, { outputHiddenStates: hiddenStates });
  const host = {
    last: out.lastHiddenState.dataSync().slice() as Float32Array,
    pooler: out.poolerOutput!.dataSync().slice() as Float32Array,
    embeds: out.imageEmbeds?.dataSync().slice() as Float32Array | undefined,
    hidden: out.hiddenStates?.map((h) => h.dataSync().slice() as Float32Array),
  };
  tf.dispose([x, out.lastHiddenState, out.poolerOutput!, ...(out.imageEmbeds ? [out.imageEmbeds] : []), ...(out.hiddenStates ?? [])]);
  return host;
}

function rows(a: Float32Array, i: number, per: number) {
  return a.subarray(i * per, (i + 1) * per);
}

describe('CLIP vision tower on the stored pixel_values (CLIPModel form, F32)', () => {
  let enc: ClipVisionEncoder;
  beforeAll(async () => {
    enc = await ClipVisionEncoder.load(CLIP_DIR);
  });
  afterAll(() => enc.dispose());

  test('reads the vision config of the CLIPModel config.json', () => {
    expect(enc.form).toBe('CLIPModel');
    expect(enc.config).toMatchObject({ hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2, numAttentionHeads: 4, imageSize: 32, patchSize: 8, hiddenAct: 'quick_gelu', layerNormEps: 1e-5, projectionDim: 16 });
    expect(enc.hasProjection).toBe(true);
  });

  test('ignores the text tower, logit_scale and the I64 position_ids; weights are frozen variables', () => {
    const names = [...enc.weights.keys()];
    expect(names.some((n) => n.startsWith('text_model.') || n === 'logit_scale' || n.endsWith('position_ids'))).toBe(false);
    expect(names).toHaveLength(5 + 2 * 16 + 2 + 1);
    expect([...enc.weights.values()].every((v) => v instanceof tf.Variable && !v.trainable)).toBe(true);
  });

  test('every quantity of every case within atol 1e-4 + rtol 1e-4', async () => {
    const exp = await expectedTensors();
    const out = runAll(enc, true);
    const tol = TOL.last_hidden_state;
    CASES.forEach((c, i) => {
      const check = (name: string, actual: Float32Array, per: number) => {
        const r = compare(rows(actual, i, per), exp.get(c.keys[name]!)!.data as Float32Array, tol.atol, tol.rtol);
        expect({ case: c.name, name, ok: r.ok }).toEqual({ case: c.name, name, ok: true });
      };
      check('last_hidden_state', out.last, 17 * 64);
      check('pooler_output', out.pooler, 64);
      check('image_embeds', out.embeds!, 16);
      out.hidden!.forEach((h, j) => check(`hidden_states.${j}`, h, 17 * 64));
    });
  });

  test.each(['per-head', 'batched'] as const)('attention %s: same outputs within tolerance', async (attention) => {
    const exp = await expectedTensors();
    const x = tf.tensor4d(pixelBatch, [CASES.length, 3, 32, 32]);
    const before = tf.memory().numTensors;
    const out = enc.forward(x, { attention });
    const last = out.lastHiddenState.dataSync() as Float32Array;
    tf.dispose([x, out.lastHiddenState, out.poolerOutput!, out.imageEmbeds!]);
    CASES.forEach((c, i) => {
      expect(compare(rows(last, i, 17 * 64), exp.get(c.keys['last_hidden_state']!)!.data as Float32Array, 1e-4, 1e-4).ok).toBe(true);
    });
    // per-head slices are derived once and then cached: a second pass creates nothing new
    const x2 = tf.tensor4d(pixelBatch.subarray(0, 3072), [1, 3, 32, 32]);
    const mid = tf.memory().numTensors;
    const o2 = enc.forward(x2, { attention });
    tf.dispose([x2, o2.lastHiddenState, o2.poolerOutput!, o2.imageEmbeds!]);
    expect(tf.memory().numTensors).toBe(mid - 1);
    expect(mid - 1).toBeGreaterThanOrEqual(before - 1);
  });

  test('inference-only tower (releaseCheckpointLayout) keeps its outputs and frees the matrices', async () => {
    const sealed = await ClipVisionEncoder.load(CLIP_DIR);
    try {
      const before = tf.memory().numTensors;
      sealed.releaseCheckpointLayout();
      expect(tf.memory().numTensors).toBeLessThan(before);
      expect(sealed.hasProjection).toBe(true);
      const a = runAll(sealed);
      const b = runAll(enc);
      expect(maxAbs(a.last, b.last)).toBe(0);
      expect(maxAbs(a.embeds!, b.embeds!)).toBe(0);
    } finally {
      sealed.dispose();
    }
  });

  test('the independent float64 reference agrees with the expected tensors (validates the reference)', async () => {
    const exp = await expectedTensors();
    const c = CASES[0]!;
    const ref = referenceClip(clipWeights, REF, exp.get(c.keys['pixel_values']!)!.data as Float32Array);
    expect(maxAbs(ref.lastHiddenState, exp.get(c.keys['last_hidden_state']!)!.data as Float32Array)).toBeLessThan(1e-5);
    expect(maxAbs(ref.imageEmbeds!, exp.get(c.keys['image_embeds']!)!.data as Float32Array)).toBeLessThan(1e-5);
  });

  test('no tensor leaks around forward', () => {
    const x = tf.tensor4d(pixelBatch.subarray(0, 2 * 3072), [2, 3, 32, 32]);
    const before = tf.memory().numTensors;
    const out = enc.forward(x, { outputHiddenStates: true });
    const produced = 3 + out.hiddenStates!.length;
    expect(tf.memory().numTensors).toBe(before + produced);
    tf.dispose([out.lastHiddenState, out.poolerOutput!, out.imageEmbeds!, ...out.hiddenStates!]);
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
  });

  test('a wrongly sized input is a ShapeError', () => {
    const x = tf.zeros([1, 3, 16, 16]);
    expect(() => enc.forward(x)).toThrow(ShapeError);
    x.dispose();
  });

  test('reassigning a frozen weight is picked up by the next forward pass', () => {
    const name = 'vision_model.encoder.layers.1.mlp.fc2.weight';
    const v = enc.weights.get(name)!;
    const saved = v.clone();
    const base = runAll(enc).pooler;
    v.assign(tf.tidy(() => tf.mul(saved, 2)));
    const changed = runAll(enc).pooler;
    v.assign(saved);
    saved.dispose();
    expect(maxAbs(changed, base)).toBeGreaterThan(1e-3);
    expect(maxAbs(runAll(enc).pooler, base)).toBe(0);
  });
});

describe('checkpoint forms and precisions', () => {
  const visionOnly = () => new Map([...clipWeights].filter(([k]) => k.startsWith('vision_model.')));
  const flatConfig = () => ({ ...clipConfig['vision_config'], model_type: 'clip_vision_model', architectures: ['CLIPVisionModel'] });

  test('CLIPVisionModel form (flat config, vision keys only): no image_embeds, same outputs', async () => {
    const dir = await writeModel('vision-model', flatConfig(), visionOnly());
    const enc = await ClipVisionEncoder.load(dir);
    try {
      expect(enc.form).toBe('CLIPVisionModel');
      expect(enc.hasProjection).toBe(false);
      const exp = await expectedTensors();
      const out = runAll(enc);
      expect(out.embeds).toBeUndefined();
      CASES.forEach((c, i) => {
        expect(compare(rows(out.last, i, 17 * 64), exp.get(c.keys['last_hidden_state']!)!.data as Float32Array, 1e-4, 1e-4).ok).toBe(true);
        expect(compare(rows(out.pooler, i, 64), exp.get(c.keys['pooler_output']!)!.data as Float32Array, 1e-4, 1e-4).ok).toBe(true);
      });
    } finally {
      enc.dispose();
    }
  });

  test('CLIPVisionModelWithProjection form: image_embeds from visual_projection', async () => {
    const tensors = visionOnly();
    tensors.set('visual_projection.weight', clipWeights.get('visual_projection.weight')!);
    const dir = await writeModel('vision-proj', { ...flatConfig(), architectures: ['CLIPVisionModelWithProjection'] }, tensors);
    const enc = await ClipVisionEncoder.load(dir);
    try {
      const exp = await expectedTensors();
      const out = runAll(enc);
      CASES.forEach((c, i) => {
        expect(compare(rows(out.embeds!, i, 16), exp.get(c.keys['image_embeds']!)!.data as Float32Array, 1e-4, 1e-4).ok).toBe(true);
      });
    } finally {
      enc.dispose();
    }
  });

  test.each(['F16', 'BF16'] as const)('%s copy: upcast on load, matches the float64 reference on the rounded weights', async (dtype) => {
    const dir = await writeModel(`clip-${dtype}`, clipConfig, clipWeights, dtype);
    const rounded = (await readSafetensors(path.join(dir, 'model.safetensors'))).tensors;
    expect(rounded.get('vision_model.encoder.layers.0.mlp.fc1.weight')!.dtype).toBe(dtype);
    const enc = await ClipVisionEncoder.load(dir);
    try {
      const w = enc.weights.get('vision_model.encoder.layers.0.mlp.fc1.weight')!;
      expect(Buffer.from(w.dataSync().buffer).equals(Buffer.from((rounded.get('vision_model.encoder.layers.0.mlp.fc1.weight')!.data as Float32Array).buffer))).toBe(true);
      const exp = await expectedTensors();
      const out = runAll(enc);
      for (const i of [0, 4]) {
        const c = CASES[i]!;
        const ref = referenceClip(rounded, REF, exp.get(c.keys['pixel_values']!)!.data as Float32Array);
        expect(compare(rows(out.last, i, 17 * 64), ref.lastHiddenState, 1e-4, 1e-4).ok).toBe(true);
        expect(compare(rows(out.pooler, i, 64), ref.poolerOutput, 1e-4, 1e-4).ok).toBe(true);
        expect(compare(rows(out.embeds!, i, 16), ref.imageEmbeds!, 1e-4, 1e-4).ok).toBe(true);
        // and the precision really changed something
        expect(maxAbs(rows(out.last, i, 17 * 64), exp.get(c.keys['last_hidden_state']!)!.data as Float32Array)).toBeGreaterThan(1e-4);
      }
    } finally {
      enc.dispose();
    }
  });

  test('hidden_act gelu (exact erf) matches the float64 reference', async () => {
    const config = structuredClone(clipConfig);
    config.vision_config.hidden_act = 'gelu';
    const dir = await writeModel('clip-gelu', config, clipWeights);
    const enc = await ClipVisionEncoder.load(dir);
    try {
      expect(enc.config.hiddenAct).toBe('gelu');
      const exp = await expectedTensors();
      const out = runAll(enc);
      for (const i of [1, 6]) {
        const c = CASES[i]!;
        const ref = referenceClip(clipWeights, { ...REF, act: 'gelu' }, exp.get(c.keys['pixel_values']!)!.data as Float32Array);
        expect(compare(rows(out.last, i, 17 * 64), ref.lastHiddenState, 1e-4, 1e-4).ok).toBe(true);
        expect(compare(rows(out.pooler, i, 64), ref.poolerOutput, 1e-4, 1e-4).ok).toBe(true);
        expect(maxAbs(rows(out.last, i, 17 * 64), exp.get(c.keys['last_hidden_state']!)!.data as Float32Array)).toBeGreaterThan(1e-3);
      }
    } finally {
      enc.dispose();
    }
  });
});

describe('bad checkpoints: ModelLoadError naming the file and the key', () => {
  const loadErr = (dir: string) => ClipVisionEncoder.load(dir).then((e) => { e.dispose(); return undefined; }, (e: unknown) => e);

  test('missing key', async () => {
    const t = new Map(clipWeights);
    t.delete('vision_model.encoder.layers.1.mlp.fc2.bias');
    const dir = await writeModel('missing-key', clipConfig, t);
    const before = tf.memory().numTensors;
    const err = await loadErr(dir);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as ModelLoadError).key).toBe('vision_model.encoder.layers.1.mlp.fc2.bias');
    expect((err as ModelLoadError).file).toBe(path.join(dir, 'model.safetensors'));
    expect((err as Error).message).toContain('missing tensor');
    expect(tf.memory().numTensors).toBe(before); // the weights read before the failure were released
  });

  test('wrong shape', async () => {
    const t = new Map(clipWeights);
    t.set('vision_model.post_layernorm.weight', { dtype: 'F32', shape: [63], data: new Float32Array(63) });
    const dir = await writeModel('wrong-shape', clipConfig, t);
    const err = await loadErr(dir);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as ModelLoadError).key).toBe('vision_model.post_layernorm.weight');
    expect((err as Error).message).toMatch(/model\.safetensors: vision_model\.post_layernorm\.weight: shape \[63\] does not match the expected \[64\]/);
  });

  test('integer dtype where a weight is expected', async () => {
    const t = new Map(clipWeights);
    t.set('vision_model.pre_layrnorm.bias', { dtype: 'I32', shape: [64], data: new Int32Array(64) });
    const err = await loadErr(await writeModel('int-weight', clipConfig, t));
    expect((err as ModelLoadError).key).toBe('vision_model.pre_layrnorm.bias');
    expect((err as Error).message).toContain('I32 is not a float type');
  });

  test('a config that is not CLIP', () => {
    expect(() => parseClipVisionConfig({ model_type: 'siglip' }, 'x/config.json')).toThrow(/x\/config\.json: model_type: model_type "siglip" is not a CLIP checkpoint/);
    expect(() => parseClipVisionConfig({ model_type: 'clip_vision_model', hidden_act: 'swish' })).toThrow(/hidden_act/);
  });
});
