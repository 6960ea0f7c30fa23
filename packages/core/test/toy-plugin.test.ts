/**
 * A toy plugin, end to end: a real throwaway package discovered from a host's dependencies, its modality built
 * by AutoModality from a config, its loader and processor feeding a forward pass on the wasm backend, the
 * numbers checked against plain JavaScript, no tensor leaked, and its weights round-tripped through
 * savePretrained / fromPretrained.
 */
import 'reflect-metadata';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  BaseModality, BaseModalityLoader, BaseModalityProcessor, createMultimeditron, InputError, ModelLoadError, readSafetensors,
  type HostTensor, type Multimeditron,
} from '@multimeditron/core';
import { makeSandbox, writePackage, writeToyPlugin } from './helpers/plugin-packages.js';
import { linearRef, matmulRef, maxAbsDiff, randomArray } from './helpers/reference.js';

let sandbox: Awaited<ReturnType<typeof makeSandbox>>;
let host: string;
let mm: Multimeditron;

beforeAll(async () => {
  sandbox = await makeSandbox('mm-toy-');
  host = path.join(sandbox.root, 'host');
  await writeToyPlugin(path.join(host, 'node_modules', 'mm-plugin-toy'), { plugin: 'mm-plugin-toy', version: '1.0.0', name: 'toy', type: 'toy' });
  await writePackage(host, { name: 'toy-host', version: '1.0.0', type: 'module', dependencies: { 'mm-plugin-toy': '1.0.0' } });
  await fs.mkdir(path.join(host, 'data'));
  await fs.writeFile(path.join(host, 'data', 'a.txt'), '1 2 3\n4 5 6\n');
  await fs.writeFile(path.join(host, 'data', 'bad.txt'), '1 two 3');
  mm = await createMultimeditron({ hostRoot: host, backend: 'wasm' });
});

afterAll(async () => {
  await sandbox.cleanup();
});

/** encoder [inputDim, featureDim], then Linear(featureDim -> hidden) with W (hidden, featureDim). */
function reference(m: BaseModality, x: Float32Array, rows: number): Float64Array {
  const cfg = m.config as unknown as { inputDim: number; featureDim: number; hiddenSize: number };
  const enc = m.encoderVariables().get('encoder.weight')!.dataSync();
  const w = m.projector.namedWeights().get('layers.0.weight')!.dataSync();
  const b = m.projector.namedWeights().get('layers.0.bias')!.dataSync();
  const features = matmulRef(x, rows, enc, cfg.inputDim, cfg.featureDim);
  return linearRef(features, rows, w, b, cfg.featureDim, cfg.hiddenSize);
}

test('the plugin is discovered from the host dependencies and registers its modality and loader', () => {
  expect(mm.backend!.backend).toBe('wasm');
  expect(tf.getBackend()).toBe('wasm');
  expect(mm.plugins.errors).toEqual([]);
  expect(mm.plugins.loaded.map((p) => [p.name, p.version, p.modalities, p.loaders])).toEqual([['mm-plugin-toy', '1.0.0', ['toy'], ['fs-toy']]]);
});

test('load -> process -> forward gives the plain-JS numbers, leaking no tensor', async () => {
  const m = await mm.modalities.fromConfig({ modelType: 'toy', hiddenSize: 5 });
  try {
    // the plugin's classes extend the very core the test uses
    expect(m).toBeInstanceOf(BaseModality);
    expect(m.processor).toBeInstanceOf(BaseModalityProcessor);
    expect(m.processor.inputName).toBe('toy_values');
    expect(m.config.toJSON()).toMatchObject({ modelType: 'toy', modalityType: 'toy', inputDim: 3, featureDim: 4, tokens: 2, hiddenSize: 5 });

    const loader = mm.loaders.create('fs-toy', { basePath: path.join(host, 'data') });
    expect(loader).toBeInstanceOf(BaseModalityLoader);
    const raw = await loader.load({ type: 'toy', value: 'a.txt' });
    const [processed] = m.processor.processAll({ type: 'toy', value: raw });
    expect(processed!.numEmbeddings).toBe(2);
    expect(processed!.value.shape).toEqual([2, 3]);

    const before = tf.memory().numTensors;
    const out = m.forward([processed!.value]);
    expect(tf.memory().numTensors).toBe(before + 1);
    expect(out.shape).toEqual([1, 2, 5]);
    const got = out.dataSync();
    out.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(maxAbsDiff(got, reference(m, Float32Array.from([1, 2, 3, 4, 5, 6]), 2))).toBeLessThan(1e-4);
    // a modality without raw encoder outputs to show returns none
    const batch = tf.zeros([1, 2, 3]);
    expect(m.encodeFeatures(batch)).toEqual({});
    batch.dispose();
    expect(tf.memory().numTensors).toBe(before);
  } finally {
    m.dispose();
  }
});

test('bad input is a typed error naming the file, and the loader refuses paths outside its folder', async () => {
  const loader = mm.loaders.create('fs-toy', { basePath: path.join(host, 'data') });
  await expect(loader.load({ type: 'toy', value: 'bad.txt' })).rejects.toMatchObject({ file: 'bad.txt', message: 'bad.txt: not a list of numbers' });
  await expect(loader.load({ type: 'toy', value: 'missing.txt' })).rejects.toBeInstanceOf(InputError);
  await expect(loader.load({ type: 'toy', value: '../package.json' })).rejects.toThrow(/outside the base folder/);
});

test('maxBatchSize chunks a larger batch without changing the numbers', async () => {
  const m = await mm.modalities.fromConfig({ modelType: 'toy', hiddenSize: 3, maxBatchSize: 2, tokens: 3, inputDim: 2, featureDim: 5 });
  try {
    const inputs: HostTensor[] = [0, 1, 2, 3, 4].map((i) => ({ data: randomArray(6, 50 + i), shape: [3, 2] }));
    const before = tf.memory().numTensors;
    const out = m.forward(inputs);
    expect(out.shape).toEqual([5, 3, 3]);
    const got = out.dataSync();
    out.dispose();
    expect(tf.memory().numTensors).toBe(before);
    const all = new Float32Array(30);
    inputs.forEach((x, i) => all.set(x.data as Float32Array, i * 6));
    expect(maxAbsDiff(got, reference(m, all, 15))).toBeLessThan(1e-4);
    // tfjs tensors are accepted too, and stay owned by the caller
    const t = tf.tensor2d(inputs[0]!.data as Float32Array, [3, 2]);
    const o2 = m.forward([t, t, t]);
    expect(o2.shape).toEqual([3, 3, 3]);
    expect(t.isDisposed).toBe(false);
    tf.dispose([t, o2]);
    expect(tf.memory().numTensors).toBe(before);
    expect(() => m.forward([])).toThrow(/at least one input/);
    expect(() => m.forward([inputs[0]!, { data: new Float32Array(4), shape: [2, 2] }])).toThrow(/differ in shape/);
    expect(tf.memory().numTensors).toBe(before);
  } finally {
    m.dispose();
  }
});

test('freezing: the encoder is frozen and the projector trainable by default; freeze/unfreeze switch them', async () => {
  const m = await mm.modalities.fromConfig({ modelType: 'toy', hiddenSize: 2 });
  try {
    expect(m.trainableVariableNames()).toEqual(['projector.layers.0.weight', 'projector.layers.0.bias']);
    m.freezeModalityEmbedder();
    expect(m.trainableVariableNames()).toEqual(['projector.layers.0.weight', 'projector.layers.0.bias']);
    m.unfreezeModalityEmbedder();
    expect(m.trainableVariableNames()).toEqual(['encoder.weight', 'projector.layers.0.weight', 'projector.layers.0.bias']);
    m.freezeProjection();
    expect(m.trainableVariableNames()).toEqual(['encoder.weight']);
    m.freezeAll();
    expect(m.trainableVariables()).toEqual([]);
    m.unfreezeAll();
    expect(m.trainableVariables()).toHaveLength(3);
    m.freezeAll();
    m.unfreezeProjection();
    expect(m.trainableVariableNames()).toEqual(['projector.layers.0.weight', 'projector.layers.0.bias']);
  } finally {
    m.dispose();
  }
});

test('savePretrained / fromPretrained round-trips config and weights', async () => {
  const dir = path.join(sandbox.root, 'saved');
  const m = await mm.modalities.fromConfig({ modelType: 'toy', hiddenSize: 4, note: 'kept' });
  let again: BaseModality | undefined;
  let projectorOnly: BaseModality | undefined;
  try {
    // train-like change of every weight, so that fresh initialisation cannot pass the test by accident
    for (const [i, v] of [...m.namedVariables().values()].entries()) v.assign(tf.tidy(() => tf.add(tf.mul(v, -2), i + 0.25)));
    await m.savePretrained(dir, { includeEncoder: true });
    const { tensors, metadata } = await readSafetensors(path.join(dir, 'model.safetensors'));
    expect([...tensors.keys()]).toEqual(['encoder.weight', 'projector.layers.0.weight', 'projector.layers.0.bias']);
    expect(metadata).toEqual({ format: 'multimeditron' });
    expect(JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8'))).toMatchObject({ modelType: 'toy', note: 'kept', hiddenSize: 4 });

    again = await mm.modalities.fromPretrained(dir);
    expect(again.config.toJSON()).toEqual(m.config.toJSON());
    for (const [k, v] of m.namedVariables()) expect(Array.from(again.namedVariables().get(k)!.dataSync())).toEqual(Array.from(v.dataSync()));
    const x: HostTensor = { data: randomArray(6, 3), shape: [2, 3] };
    const before = tf.memory().numTensors;
    const [a, b] = [m.forward([x]), again.forward([x])];
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    tf.dispose([a, b]);
    expect(tf.memory().numTensors).toBe(before);

    // the default saves the projector only; the encoder then comes from the modality's own load()
    const dir2 = path.join(sandbox.root, 'saved-projector');
    await m.savePretrained(dir2);
    expect([...(await readSafetensors(path.join(dir2, 'model.safetensors'))).tensors.keys()]).toEqual(['projector.layers.0.weight', 'projector.layers.0.bias']);
    projectorOnly = await mm.modalities.fromPretrained(dir2);
    expect(Array.from(projectorOnly.projector.namedWeights().get('layers.0.bias')!.dataSync()))
      .toEqual(Array.from(m.projector.namedWeights().get('layers.0.bias')!.dataSync()));
    expect(Array.from(projectorOnly.encoderVariables().get('encoder.weight')!.dataSync()))
      .not.toEqual(Array.from(m.encoderVariables().get('encoder.weight')!.dataSync()));
  } finally {
    m.dispose();
    again?.dispose();
    projectorOnly?.dispose();
  }
});

test('fromPretrained refuses a folder without weights, or with weights that do not fit, and leaks nothing', async () => {
  const before = tf.memory().numTensors;
  const noWeights = path.join(sandbox.root, 'no-weights');
  await fs.mkdir(noWeights);
  await fs.writeFile(path.join(noWeights, 'config.json'), JSON.stringify({ modelType: 'toy', hiddenSize: 4 }));
  const e1 = await mm.modalities.fromPretrained(noWeights).catch((e) => e);
  expect(e1).toBeInstanceOf(ModelLoadError);
  expect(e1.file).toBe(path.join(noWeights, 'model.safetensors'));

  const m = await mm.modalities.fromConfig({ modelType: 'toy', hiddenSize: 4 });
  const wrong = path.join(sandbox.root, 'wrong-shape');
  await m.savePretrained(wrong);
  m.dispose();
  const cfg = JSON.parse(await fs.readFile(path.join(wrong, 'config.json'), 'utf8'));
  await fs.writeFile(path.join(wrong, 'config.json'), JSON.stringify({ ...cfg, hiddenSize: 6 }));
  const e2 = await mm.modalities.fromPretrained(wrong).catch((e) => e);
  expect(e2).toBeInstanceOf(ModelLoadError);
  expect(e2.key).toBe('projector.layers.0.weight');
  expect(e2.message).toMatch(/shape \[4,4\] != \[6,4\]/);
  expect(tf.memory().numTensors).toBe(before);
});
