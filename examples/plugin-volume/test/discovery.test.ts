import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { createMultimeditron, selectBackend } from '@multimeditron/core';
import { writeNifti, writeNpy } from './helpers.js';

const PKG_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PKG_NAME = '@multimeditron-examples/plugin-volume';

let host: string;
beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
  if (!existsSync(path.join(PKG_ROOT, 'dist', 'index.js'))) {
    throw new Error(`build the plugin first: npx tsc -b examples/plugin-volume (missing ${PKG_ROOT}/dist/index.js)`);
  }
  // A host application that depends on the plugin, as an npm install would leave it.
  host = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-volume-host-'));
  await fs.writeFile(path.join(host, 'package.json'), JSON.stringify({ name: 'host', private: true, dependencies: { [PKG_NAME]: '*' } }));
  await fs.mkdir(path.join(host, 'node_modules', '@multimeditron-examples'), { recursive: true });
  await fs.symlink(PKG_ROOT, path.join(host, 'node_modules', PKG_NAME), 'dir');
  await fs.mkdir(path.join(host, 'data'));
  await fs.writeFile(path.join(host, 'data', 'ct.npy'), writeNpy(Array.from({ length: 6 * 10 * 10 }, (_, i) => (i * 37) % 101), [6, 10, 10], '<i2'));
  await fs.writeFile(path.join(host, 'data', 'mri.nii.gz'), writeNifti({ dims: [12, 12, 5], type: 'float32', voxel: (x, y, z) => x * y - z, gzip: true }));
});
afterAll(async () => {
  await fs.rm(host, { recursive: true, force: true });
});

test('a host discovers the plugin from its dependencies and runs load -> process -> forward', async () => {
  const mm = await createMultimeditron({ hostRoot: host, backend: false, strict: true });
  expect(mm.plugins.source).toBe('dependencies');
  expect(mm.plugins.errors).toEqual([]);
  const loaded = mm.plugins.loaded.find((p) => p.name === PKG_NAME);
  expect(loaded).toMatchObject({ version: '0.1.0', modalities: ['volume_3d'], loaders: ['fs-volume', 'raw-volume'] });
  expect(mm.loaders.forModalityType('image_3d').sort()).toEqual(['fs-volume', 'raw-volume']);

  const modality = await mm.modalities.fromPretrained('volume_3d', {
    hiddenSize: 32, embedDim: 8, volumeSize: [4, 8, 8], patchSize: [2, 4, 4], poolSize: [2, 1, 1],
  });
  try {
    const loader = mm.loaders.create('fs-volume', { basePath: path.join(host, 'data') });
    const processed = [];
    for (const file of ['ct.npy', 'mri.nii.gz']) {
      const raw = await loader.load({ type: 'image_3d', value: file });
      processed.push(...modality.processor.processAll({ type: 'image_3d', value: raw }));
    }
    expect(processed.map((p) => p.numEmbeddings)).toEqual([4, 4]);
    const before = tf.memory().numTensors;
    const out = modality.forward(processed.map((p) => p.value));
    expect(out.shape).toEqual([2, 4, 32]);
    expect(Array.from(out.dataSync()).every(Number.isFinite)).toBe(true);
    out.dispose();
    expect(tf.memory().numTensors).toBe(before);
  } finally {
    modality.dispose();
  }
});
