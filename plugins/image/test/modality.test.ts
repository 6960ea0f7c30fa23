import { promises as fs } from 'node:fs';
import path from 'node:path';
import { jest } from '@jest/globals';
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core does not register its gradients by itself (the tfjs umbrella package does)
import '@tensorflow/tfjs-core/dist/register_all_gradients.js';
import { ConfigValidationError, ConsoleLogger, createMultimeditron, type Multimeditron } from '@multimeditron/core';
import plugin, { ImageConfig, ImageModality, ImageProcessor, type RgbImage } from '@multimeditron/plugin-image';
import { CASES, CLIP_DIR, compare, expectedTensors, golden, maxAbs, tempDir } from './helpers.js';

let mm: Multimeditron;
let pixels: tf.Tensor[];

beforeAll(async () => {
  mm = await createMultimeditron({ plugins: [plugin], backend: 'wasm', resolver: { offline: true }, logger: new ConsoleLogger('silent') });
  const exp = await expectedTensors();
  pixels = CASES.map((c) => tf.tensor(exp.get(c.keys['pixel_values']!)!.data as Float32Array, [3, 32, 32]));
});

afterAll(() => {
  tf.dispose(pixels);
});

async function make(extra: Record<string, unknown> = {}): Promise<ImageModality> {
  const m = await mm.modalities.fromPretrained('meditron_clip', { clipName: CLIP_DIR, hiddenSize: 32, ...extra });
  expect(m).toBeInstanceOf(ImageModality);
  return m as ImageModality;
}

describe('plugin manifest and registration', () => {
  test('registers meditron_clip and the two loaders', () => {
    expect(mm.plugins.errors).toEqual([]);
    expect(mm.plugins.loaded.map((p) => p.name)).toEqual(['@multimeditron/plugin-image']);
    const reg = mm.modalityRegistry.get('meditron_clip');
    expect(reg).toMatchObject({ modalityType: 'image', encoderKey: 'clipName', encoderModelTypes: ['clip', 'clip_vision_model'] });
    expect(reg.config).toBe(ImageConfig);
    expect(reg.processor).toBe(ImageProcessor);
    expect(mm.loaders.forModalityType('image').sort()).toEqual(['fs-image', 'raw-image']);
    expect(plugin).toMatchObject({ name: '@multimeditron/plugin-image', apiVersion: 1 });
  });

  test('ImageConfig: defaults, validation, unknown keys kept', () => {
    const c = new ImageConfig({ hiddenSize: 8, extraKwarg: 1 } as never);
    expect(c.toJSON()).toEqual({
      modelType: 'meditron_clip', modalityType: 'image', hiddenSize: 8, maxBatchSize: 32, clipName: 'openai/clip-vit-large-patch14',
      projectionType: 'mlp', pixelShuffleFactor: 2, extraKwarg: 1,
    });
    expect(() => new ImageConfig({ projectionType: 'conv' } as never)).toThrow(ConfigValidationError);
    expect(() => mm.modalities.createConfig({ modelType: 'meditron_clip', modalityType: 'audio' })).toThrow(ConfigValidationError);
  });

  test('processorFor builds the processor without loading weights', async () => {
    const p = await mm.modalities.processorFor({ modelType: 'meditron_clip', clipName: CLIP_DIR, hiddenSize: 32 });
    expect(p).toBeInstanceOf(ImageProcessor);
    expect((p as ImageProcessor).numEmbeddings).toBe(16);
    expect(p.inputName).toBe('pixel_values');
  });
});

describe('ImageModality', () => {
  let m: ImageModality;
  beforeAll(async () => {
    m = await make();
  });
  afterAll(() => m.dispose());

  test('load -> process -> forward gives [n, numEmbeddings, hiddenSize]', async () => {
    const loader = mm.loaders.create('fs-image', { basePath: golden('images') });
    const raws = await Promise.all(['retina.jpg', 'tiny_12x9.png'].map((f) => loader.load({ type: 'image', value: f })));
    const processed = raws.map((r) => m.processor.process({ type: 'image', value: r as RgbImage }));
    expect(processed.map((p) => p.numEmbeddings)).toEqual([16, 16]);
    expect(m.numEmbeddings).toBe(16);
    const before = tf.memory().numTensors;
    const emb = m.forward(processed.map((p) => p.value));
    expect(emb.shape).toEqual([2, 16, 32]);
    emb.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  test('embedding = projector(last_hidden_state[:, 1:, :])', () => {
    const before = tf.memory().numTensors;
    const emb = m.forward(pixels);
    const expected = tf.tidy(() => {
      const { last_hidden_state: last } = m.encodeFeatures(tf.stack(pixels));
      return m.projector.apply(tf.slice(last!, [0, 1, 0], [-1, -1, -1]) as tf.Tensor3D);
    });
    expect(maxAbs(emb.dataSync(), expected.dataSync())).toBe(0);
    tf.dispose([emb, expected]);
    expect(tf.memory().numTensors).toBe(before);
  });

  test('encodeFeatures returns last_hidden_state, pooler_output and image_embeds matching the fixtures', async () => {
    const exp = await expectedTensors();
    const before = tf.memory().numTensors;
    const batch = tf.stack(pixels);
    const f = m.encodeFeatures(batch);
    expect(Object.keys(f).sort()).toEqual(['image_embeds', 'last_hidden_state', 'pooler_output']);
    expect(f['last_hidden_state']!.shape).toEqual([8, 17, 64]);
    const last = f['last_hidden_state']!.dataSync();
    const pool = f['pooler_output']!.dataSync();
    const embeds = f['image_embeds']!.dataSync();
    CASES.forEach((c, i) => {
      expect(compare(last.subarray(i * 1088, (i + 1) * 1088), exp.get(c.keys['last_hidden_state']!)!.data as Float32Array, 1e-4, 1e-4).ok).toBe(true);
      expect(compare(pool.subarray(i * 64, (i + 1) * 64), exp.get(c.keys['pooler_output']!)!.data as Float32Array, 1e-4, 1e-4).ok).toBe(true);
      expect(compare(embeds.subarray(i * 16, (i + 1) * 16), exp.get(c.keys['image_embeds']!)!.data as Float32Array, 1e-4, 1e-4).ok).toBe(true);
    });
    tf.dispose([batch, ...Object.values(f)]);
    expect(tf.memory().numTensors).toBe(before);
  });

  test('inputs above maxBatchSize are chunked, with the same result', () => {
    const whole = m.forward(pixels);
    const spy = jest.spyOn(m.encoder, 'forward');
    m.config.maxBatchSize = 3;
    try {
      const before = tf.memory().numTensors;
      const chunked = m.forward(pixels);
      expect(spy.mock.calls.map((c) => c[0].shape[0])).toEqual([3, 3, 2]);
      expect(maxAbs(chunked.dataSync(), whole.dataSync())).toBeLessThan(1e-6);
      chunked.dispose();
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      m.config.maxBatchSize = 32;
      spy.mockRestore();
      whole.dispose();
    }
  });

  test('host tensors from the processor are accepted as they are', () => {
    const exp = m.forward([pixels[0]!]);
    const host = m.forward([{ data: pixels[0]!.dataSync() as Float32Array, shape: [3, 32, 32] }]);
    expect(maxAbs(exp.dataSync(), host.dataSync())).toBe(0);
    tf.dispose([exp, host]);
  });

  test('freeze / unfreeze set exactly the right variables trainable', () => {
    const encoderNames = [...m.encoderVariables().keys()];
    const projector = ['projector.layers.0.weight', 'projector.layers.0.bias', 'projector.layers.2.weight', 'projector.layers.2.bias', 'projector.layers.4.weight', 'projector.layers.4.bias'];
    expect(encoderNames).toHaveLength(40);
    expect(encoderNames).toContain('vision_model.encoder.layers.1.self_attn.q_proj.weight');
    expect(encoderNames).toContain('visual_projection.weight');
    expect(m.trainableVariableNames()).toEqual(projector); // default: ALIGNMENT
    m.freezeAll();
    expect(m.trainableVariableNames()).toEqual([]);
    m.unfreezeModalityEmbedder();
    expect(m.trainableVariableNames()).toEqual(encoderNames);
    m.unfreezeProjection();
    expect(m.trainableVariableNames()).toEqual([...encoderNames, ...projector]);
    m.freezeModalityEmbedder();
    expect(m.trainableVariableNames()).toEqual(projector);
    m.freezeProjection();
    m.unfreezeAll();
    expect(m.trainableVariableNames()).toHaveLength(46);
    m.freezeModalityEmbedder();
    m.unfreezeProjection();
    expect(m.trainableVariableNames()).toEqual(projector);
  });

  test('gradients reach the projector, and the encoder once it is unfrozen', () => {
    const batch = pixels.slice(0, 2);
    const grads = (vars: tf.Variable[]) => {
      const { value, grads: g } = tf.variableGrads(() => tf.sum(m.forward(batch)) as tf.Scalar, vars);
      const names = Object.keys(g);
      const nonZero = Object.values(g).every((t) => tf.tidy(() => tf.any(tf.notEqual(t, 0)).dataSync()[0] === 1));
      tf.dispose([value, ...Object.values(g)]);
      return { n: names.length, nonZero };
    };
    expect(grads(m.trainableVariables())).toEqual({ n: 6, nonZero: true });
    m.unfreezeModalityEmbedder();
    try {
      const encoderOnly = m.trainableVariables().filter((v) => !m.projector.variables.includes(v) && v !== m.encoderVariables().get('visual_projection.weight') && !v.name.includes('post_layernorm'));
      const before = tf.memory().numTensors;
      const r = grads(encoderOnly.slice(0, 12));
      expect(r).toEqual({ n: 12, nonZero: true });
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      m.freezeModalityEmbedder();
    }
  });
});

describe('projectors and token counts', () => {
  test.each([
    ['linear', {}, 16],
    ['pixel_shuffle', { pixelShuffleFactor: 2 }, 4],
    ['pixel_shuffle', { pixelShuffleFactor: 4 }, 1],
  ] as const)('%s %j -> %d tokens', async (projectionType, extra, tokens) => {
    const m = await make({ projectionType, ...extra });
    try {
      expect(m.numEmbeddings).toBe(tokens);
      expect(m.processor.numEmbeddings).toBe(tokens);
      const before = tf.memory().numTensors;
      const emb = m.forward(pixels.slice(0, 3));
      expect(emb.shape).toEqual([3, tokens, 32]);
      emb.dispose();
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      m.dispose();
    }
  });

  test('a pixel_shuffle factor that does not divide the patch grid fails at load, leaking nothing', async () => {
    const before = tf.memory().numTensors;
    await expect(make({ projectionType: 'pixel_shuffle', pixelShuffleFactor: 3 })).rejects.toThrow(ConfigValidationError);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('savePretrained / fromPretrained(dir)', () => {
  test('round-trips the config and the projector weights', async () => {
    const dir = await tempDir();
    try {
      const m = await make({ projectionType: 'linear' });
      const w = m.projector.namedWeights().get('layers.0.weight')!;
      w.assign(tf.tidy(() => tf.add(w, 0.5)));
      const saved = w.dataSync().slice();
      const emb = m.forward(pixels.slice(0, 2));
      const savedEmb = emb.dataSync().slice();
      emb.dispose();
      await m.savePretrained(dir);
      m.dispose();

      const json = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8'));
      expect(json).toMatchObject({ modelType: 'meditron_clip', modalityType: 'image', clipName: CLIP_DIR, projectionType: 'linear' });
      const back = (await mm.modalities.fromPretrained(dir)) as ImageModality;
      try {
        expect(Buffer.from(back.projector.namedWeights().get('layers.0.weight')!.dataSync().buffer).equals(Buffer.from(saved.buffer))).toBe(true);
        const again = back.forward(pixels.slice(0, 2));
        expect(maxAbs(again.dataSync(), savedEmb)).toBe(0);
        again.dispose();
      } finally {
        back.dispose();
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
