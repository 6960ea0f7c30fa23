import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { createMultimeditron, selectBackend, ShapeError, type Multimeditron } from '@multimeditron/core';
import plugin, { VolumeModality, type Volume } from '../src/index.js';
import { rng } from './helpers.js';

const small = { hiddenSize: 16, embedDim: 8, volumeSize: [4, 8, 8], patchSize: [2, 4, 4], poolSize: [1, 2, 2], maxBatchSize: 2 };

let mm: Multimeditron;
beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
  mm = await createMultimeditron({ plugins: [plugin], backend: false });
});

function volume(seed: number, shape = [5, 7, 9]): Volume {
  const r = rng(seed);
  return { data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r()), shape, format: 'array', source: `v${seed}` };
}

test('forward gives [batch, numEmbeddings, hiddenSize], chunked by maxBatchSize, without leaking tensors', async () => {
  const m = (await mm.modalities.fromConfig({ modelType: 'volume_3d', ...small })) as VolumeModality;
  try {
    const inputs = [1, 2, 3].map((s) => m.processor.process({ type: 'image_3d', value: volume(s) }).value);
    const before = tf.memory().numTensors;
    const out = m.forward(inputs);
    expect(out.shape).toEqual([3, 2, 16]);
    const one = m.forward([inputs[2]!]);
    const all = await out.array();
    const last = await one.array();
    out.dispose();
    one.dispose();
    expect(tf.memory().numTensors).toBe(before);
    for (let t = 0; t < 2; t++) for (let k = 0; k < 16; k++) expect(all[2]![t]![k]).toBeCloseTo(last[0]![t]![k]!, 5);
    expect(() => m.forward([{ data: new Float32Array(8), shape: [1, 2, 2, 2] }])).toThrow(ShapeError);
    expect(tf.memory().numTensors).toBe(before);
  } finally {
    m.dispose();
  }
});

test('the patch encoder is a stride-patch Conv3D followed by average pooling (plain-JS reference)', async () => {
  const m = (await mm.modalities.fromConfig({ modelType: 'volume_3d', ...small })) as VolumeModality;
  try {
    const x = m.processor.process({ type: 'image_3d', value: volume(11) }).value;
    const vars = m.encoderVariables();
    const w = vars.get('patch_embed.weight')!.dataSync(); // (E, 1, 2, 4, 4)
    const b = vars.get('patch_embed.bias')!.dataSync();
    const before = tf.memory().numTensors;
    const feats = tf.tidy(() => m.encodeFeatures(tf.tensor(x.data as Float32Array, [1, ...x.shape])));
    const got = feats['last_hidden_state']!;
    expect(got.shape).toEqual([1, 2, 8]);
    const g = got.dataSync();
    got.dispose();
    expect(tf.memory().numTensors).toBe(before);
    const X = (z: number, y: number, xx: number) => x.data[(z * 8 + y) * 8 + xx]!;
    // patch grid (2, 2, 2); pooled by (1, 2, 2) -> tokens at gd = 0, 1
    for (let gd = 0; gd < 2; gd++) {
      for (let e = 0; e < 8; e++) {
        let acc = 0;
        for (let gh = 0; gh < 2; gh++) for (let gw = 0; gw < 2; gw++) {
          let s = b[e]!;
          for (let a = 0; a < 2; a++) for (let c = 0; c < 4; c++) for (let d = 0; d < 4; d++) {
            s += w[((e * 2 + a) * 4 + c) * 4 + d]! * X(gd * 2 + a, gh * 4 + c, gw * 4 + d);
          }
          acc += s / 4;
        }
        expect(g[gd * 8 + e]).toBeCloseTo(acc, 4);
      }
    }
  } finally {
    m.dispose();
  }
});

test('freezing: the encoder starts frozen, the projector trainable', async () => {
  const m = await mm.modalities.fromConfig({ modelType: 'volume_3d', ...small });
  try {
    expect(m.trainableVariableNames().every((n) => n.startsWith('projector.'))).toBe(true);
    m.unfreezeModalityEmbedder();
    expect(m.trainableVariableNames()).toEqual(expect.arrayContaining(['patch_embed.weight', 'patch_embed.bias']));
    m.freezeAll();
    expect(m.trainableVariables()).toHaveLength(0);
  } finally {
    m.dispose();
  }
});

test('seeded weights are reproducible; savePretrained + fromPretrained(dir) round-trips encoder and projector', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-volume-save-'));
  try {
    const input = volume(5);
    const a = await mm.modalities.fromConfig({ modelType: 'volume_3d', ...small, seed: 3 });
    const x = a.processor.processAll({ type: 'image_3d', value: input })[0]!.value;
    const ya = a.forward([x]);
    const expected = ya.dataSync().slice();
    ya.dispose();
    // change the weights so that a fresh seeded build would differ from the saved ones
    for (const v of a.namedVariables().values()) v.assign(tf.tidy(() => tf.mul(v, 1.5)));
    const yb = a.forward([x]);
    const trained = yb.dataSync().slice();
    yb.dispose();
    await a.savePretrained(dir);
    a.dispose();

    const again = await mm.modalities.fromConfig({ modelType: 'volume_3d', ...small, seed: 3 });
    const yc = again.forward([x]);
    expect(Array.from(yc.dataSync())).toEqual(Array.from(expected));
    yc.dispose();
    again.dispose();

    const saved = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8'));
    expect(saved).toMatchObject({ modelType: 'volume_3d', modalityType: 'image_3d', volumeSize: [4, 8, 8] });
    const loaded = await mm.modalities.fromPretrained(dir);
    try {
      const yd = loaded.forward([x]);
      const got = yd.dataSync();
      for (let i = 0; i < got.length; i++) expect(got[i]).toBeCloseTo(trained[i]!, 5);
      yd.dispose();
    } finally {
      loaded.dispose();
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('building and disposing a modality leaves no tensor behind (initial weights included)', async () => {
  const before = tf.memory().numTensors;
  const m = await mm.modalities.fromConfig({ modelType: 'volume_3d', ...small });
  expect(tf.memory().numTensors).toBeGreaterThan(before);
  m.dispose();
  expect(tf.memory().numTensors).toBe(before);
});
