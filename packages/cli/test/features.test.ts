import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { createMultimeditron, readSafetensors, selectBackend, writeSafetensors } from '@multimeditron/core';
import { writeNpy } from '../../../examples/plugin-volume/test/helpers.js';
import { compare, golden, manifest, REPO_ROOT } from '../../../test/helpers/fixtures.js';
import { runCli } from './helpers.js';

const IMAGE_PLUGIN = path.join(REPO_ROOT, 'plugins', 'image');
const AUDIO_PLUGIN = path.join(REPO_ROOT, 'plugins', 'audio');
const VOLUME_PLUGIN = path.join(REPO_ROOT, 'examples', 'plugin-volume');

async function expectedTensors(file: string) {
  return (await readSafetensors(golden('expected', file))).tensors;
}

describe('multimeditron features', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-features-'));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('images: writes i.pixel_values, i.last_hidden_state, i.pooler_output matching the references; a bad file fails alone', async () => {
    const cases = manifest().clip.cases as Array<{ name: string; image: string }>;
    const files = [...cases.map((c) => golden(c.image)), golden('images', 'truncated.jpg')];
    const out = path.join(dir, 'img.safetensors');
    const r = runCli(['features', golden('clip-tiny'), ...files, '--out', out, '--plugins', IMAGE_PLUGIN, '--json']);
    expect(r.status).toBe(1); // truncated.jpg failed, the others were written
    expect(r.stderr).toContain('truncated.jpg');
    const { tensors, metadata } = await readSafetensors(out);
    expect(JSON.parse(metadata['files']!)).toEqual(files);
    expect(Object.keys(JSON.parse(metadata['errors']!))).toEqual([String(cases.length)]);
    const exp = await expectedTensors('clip-tiny.safetensors');
    cases.forEach((c, i) => {
      const pv = compare(tensors.get(`${i}.pixel_values`)!.data as Float32Array, exp.get(`${c.name}.pixel_values`)!.data as Float32Array, 1e-5);
      expect(pv.ok).toBe(true);
      for (const key of ['last_hidden_state', 'pooler_output']) {
        const got = tensors.get(`${i}.${key}`)!;
        expect(got.shape).toEqual(exp.get(`${c.name}.${key}`)!.shape);
        const cmp = compare(got.data as Float32Array, exp.get(`${c.name}.${key}`)!.data as Float32Array, 1e-4, 1e-4);
        expect({ key, name: c.name, ok: cmp.ok }).toEqual({ key, name: c.name, ok: true });
      }
    });
    expect(tensors.has(`${cases.length}.pixel_values`)).toBe(false);
  });

  test('images: --from-tensors feeds the stored pixel_values to the encoder alone', async () => {
    const out = path.join(dir, 'stored.safetensors');
    const cfg = path.join(dir, 'clip-extra.json');
    await fs.writeFile(cfg, JSON.stringify({ hiddenSize: 24, projectionType: 'linear' }));
    const r = runCli(['features', golden('clip-tiny'), '--from-tensors', golden('expected', 'clip-tiny.safetensors'), '--out', out,
      '--plugins', IMAGE_PLUGIN, '--config', cfg, '--embeddings']);
    expect(r.status).toBe(0);
    const { tensors, metadata } = await readSafetensors(out);
    const keys = JSON.parse(metadata['files']!) as string[];
    expect(tensors.get('0.embeddings')!.shape).toEqual([16, 24]); // 16 patches (CLS dropped) x hiddenSize
    expect(keys.length).toBe(manifest().clip.cases.length);
    const exp = await expectedTensors('clip-tiny.safetensors');
    keys.forEach((k, i) => {
      const name = k.replace(/\.pixel_values$/, '');
      const cmp = compare(tensors.get(`${i}.last_hidden_state`)!.data as Float32Array, exp.get(`${name}.last_hidden_state`)!.data as Float32Array, 1e-4, 1e-4);
      expect(cmp.ok).toBe(true);
    });
  });

  test('--from-tensors: an input of the wrong shape fails alone, the others are written', async () => {
    const exp = await expectedTensors('clip-tiny.safetensors');
    const good = exp.get('retina.pixel_values')!;
    const stored = path.join(dir, 'mixed.safetensors');
    await writeSafetensors(stored, {
      'a.pixel_values': { data: good.data as Float32Array, shape: good.shape },
      'b.pixel_values': { data: new Float32Array(3 * 16 * 16), shape: [3, 16, 16] },
      'c.pixel_values': { data: good.data as Float32Array, shape: good.shape },
    });
    const out = path.join(dir, 'mixed-out.safetensors');
    const r = runCli(['features', golden('clip-tiny'), '--from-tensors', stored, '--out', out, '--plugins', IMAGE_PLUGIN, '--batch-size', '3']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/error: b\.pixel_values/);
    const { tensors, metadata } = await readSafetensors(out);
    expect(Object.keys(JSON.parse(metadata['errors']!))).toEqual(['1']);
    expect(tensors.has('1.last_hidden_state')).toBe(false);
    const ref = exp.get('retina.last_hidden_state')!.data as Float32Array;
    for (const i of [0, 2]) expect(compare(tensors.get(`${i}.last_hidden_state`)!.data as Float32Array, ref, 1e-4, 1e-4).ok).toBe(true);
  });

  test('audio: writes i.input_features and i.last_hidden_state matching the references', async () => {
    expect(existsSync(path.join(AUDIO_PLUGIN, 'dist', 'index.js'))).toBe(true);
    const cases = (manifest().whisper.cases as Array<{ name: string; audio: string }>).filter((c) => !c.name.includes('44k1'));
    const out = path.join(dir, 'audio.safetensors');
    const r = runCli(['features', golden('whisper-tiny'), ...cases.map((c) => golden(c.audio)), '--out', out, '--plugins', AUDIO_PLUGIN]);
    expect(r.stderr).not.toMatch(/error:/);
    expect(r.status).toBe(0);
    const { tensors } = await readSafetensors(out);
    const exp = await expectedTensors('whisper-tiny.safetensors');
    cases.forEach((c, i) => {
      const f = compare(tensors.get(`${i}.input_features`)!.data as Float32Array, exp.get(`${c.name}.input_features`)!.data as Float32Array, 5e-4);
      expect({ name: c.name, ok: f.ok }).toEqual({ name: c.name, ok: true });
      expect(tensors.get(`${i}.last_hidden_state`)!.shape).toEqual([1500, 32]);
    });
  });

  test('a modality folder written by savePretrained (no encoder checkpoint): --embeddings writes the modality output', async () => {
    await selectBackend({ backend: 'wasm' });
    const mm = await createMultimeditron({ plugins: [VOLUME_PLUGIN], backend: false, strict: true });
    const saved = path.join(dir, 'volume-model');
    const vol = await mm.modalities.fromPretrained('volume_3d', {
      hiddenSize: 32, embedDim: 16, volumeSize: [8, 16, 16], patchSize: [2, 4, 4], poolSize: [2, 2, 2], seed: 3,
    });
    const values = Float32Array.from({ length: 6 * 10 * 12 }, (_, i) => Math.sin(i * 0.37) * 100 + i * 0.01);
    const npy = path.join(dir, 'scan.npy');
    await fs.writeFile(npy, writeNpy(values, [6, 10, 12]));
    let expected: Float32Array;
    try {
      await vol.savePretrained(saved);
      const before = tf.memory().numTensors;
      const raw = await mm.loaders.create('fs-volume', { basePath: dir }).load({ type: 'image_3d', value: 'scan.npy' });
      const [processed] = vol.processor.processAll({ type: 'image_3d', value: raw });
      const out = vol.forward([processed!.value]);
      expect(out.shape).toEqual([1, processed!.numEmbeddings, 32]);
      expected = out.dataSync() as Float32Array;
      out.dispose();
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      vol.dispose();
    }
    const outFile = path.join(dir, 'volume.safetensors');
    const r = runCli(['features', saved, npy, '--embeddings', '--out', outFile, '--plugins', VOLUME_PLUGIN]);
    expect(r.stderr).not.toMatch(/error:/);
    expect(r.status).toBe(0);
    const { tensors, metadata } = await readSafetensors(outFile);
    expect(metadata['modality']).toBe('volume_3d');
    expect(tensors.get('0.pixel_values')!.shape).toEqual([1, 8, 16, 16]);
    const emb = tensors.get('0.embeddings')!;
    expect(emb.shape).toEqual([8, 32]);
    expect(compare(emb.data as Float32Array, expected, 1e-5, 1e-5).ok).toBe(true);
  });

  test('an encoder checkpoint for a modality without encoderKey is a usage error naming savePretrained', () => {
    const r = runCli(['features', golden('clip-tiny'), golden('images', 'retina.jpg'), '--modality', 'volume_3d',
      '--out', path.join(dir, 'y.safetensors'), '--plugins', VOLUME_PLUGIN]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/savePretrained/);
  });

  test('a model whose config.json no plugin claims is a usage error (exit 2)', async () => {
    const m = path.join(dir, 'unknown-model');
    await fs.mkdir(m, { recursive: true });
    await fs.writeFile(path.join(m, 'config.json'), JSON.stringify({ model_type: 'bert' }));
    const r = runCli(['features', m, golden('images', 'retina.jpg'), '--out', path.join(dir, 'x.safetensors'), '--plugins', IMAGE_PLUGIN]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--modality/);
  });
});
