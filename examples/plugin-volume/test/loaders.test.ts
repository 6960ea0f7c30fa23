import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { InputError } from '@multimeditron/core';
import { decodeVolume, FsVolumeLoader, RawVolumeLoader } from '../src/index.js';
import { writeNifti, writeNpy } from './helpers.js';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-volume-loaders-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const ramp = (n: number, f = (i: number) => i) => Array.from({ length: n }, (_, i) => f(i));

describe('.npy decoding', () => {
  test.each([
    ['<f4', (i: number) => i * 0.5 - 3],
    ['<f8', (i: number) => i / 7],
    ['>i2', (i: number) => i * 100 - 1000],
    ['<i2', (i: number) => 5 - i],
    ['|u1', (i: number) => i % 256],
    ['<i8', (i: number) => i * 1_000_000],
    ['>u2', (i: number) => i * 3],
  ])('%s values and shape', (descr, f) => {
    const values = ramp(2 * 3 * 4, f);
    const v = decodeVolume(writeNpy(values, [2, 3, 4], descr), 'a.npy');
    expect(v.format).toBe('npy');
    expect(v.shape).toEqual([2, 3, 4]);
    expect(Array.from(v.data)).toEqual(values.map((x) => Math.fround(x)));
  });

  test('Fortran-ordered arrays are returned in C order', () => {
    const values = ramp(2 * 3 * 4, (i) => i + 1);
    const v = decodeVolume(writeNpy(values, [2, 3, 4], '<f4', { fortran: true }), 'f.npy');
    expect(Array.from(v.data)).toEqual(values);
  });

  test('format version 2.0 header', () => {
    const v = decodeVolume(writeNpy([1, 2, 3, 4, 5, 6, 7, 8], [2, 2, 2], '<f4', { version: 2 }), 'v2.npy');
    expect(Array.from(v.data)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  test('truncated data is an InputError naming the file', () => {
    const bytes = writeNpy(ramp(24), [2, 3, 4]);
    const bad = bytes.subarray(0, bytes.length - 5);
    expect(() => decodeVolume(bad, 'cut.npy')).toThrow(InputError);
    expect(() => decodeVolume(bad, 'cut.npy')).toThrow(/cut\.npy: truncated \.npy data/);
  });

  test('object arrays (pickles) are refused', () => {
    const bytes = writeNpy([1, 2], [2], '<f4');
    const patched = Buffer.from(bytes.toString('latin1').replace("'<f4'", "'|O' "), 'latin1');
    expect(() => decodeVolume(patched, 'obj.npy')).toThrow(/obj\.npy: object arrays/);
  });

  test('unrecognised bytes are an InputError', () => {
    expect(() => decodeVolume(Buffer.from('hello world, not a volume'), 'x.npy', 'npy')).toThrow(InputError);
    expect(() => decodeVolume(Buffer.from('hello world, not a volume'), 'x.npy', 'npy')).toThrow(/x\.npy: not a \.npy file/);
  });
});

describe('NIfTI decoding', () => {
  const voxel = (x: number, y: number, z: number) => x + 10 * y + 100 * z;

  test.each([
    ['float32 little-endian .nii', { type: 'float32' as const }],
    ['int16 big-endian .nii', { type: 'int16' as const, littleEndian: false }],
    ['uint8 .nii.gz', { type: 'uint8' as const, gzip: true }],
    ['float64 .nii.gz', { type: 'float64' as const, gzip: true }],
  ])('%s: x fastest, read as (D, H, W) = (z, y, x)', (_, o) => {
    const bytes = writeNifti({ dims: [4, 3, 2], voxel, pixdim: [0.5, 0.75, 2], ...o });
    const v = decodeVolume(bytes, 'vol.nii');
    expect(v.format).toBe('nifti');
    expect(v.shape).toEqual([2, 3, 4]);
    expect(v.spacing).toEqual([2, 0.75, 0.5]);
    for (let z = 0; z < 2; z++) for (let y = 0; y < 3; y++) for (let x = 0; x < 4; x++) {
      expect(v.data[(z * 3 + y) * 4 + x]).toBe(voxel(x, y, z));
    }
  });

  test('scl_slope and scl_inter are applied', () => {
    const v = decodeVolume(writeNifti({ dims: [2, 2, 2], type: 'int16', voxel: (x) => x, slope: 2.5, inter: -1 }), 's.nii');
    expect(Array.from(v.data)).toEqual([-1, 1.5, -1, 1.5, -1, 1.5, -1, 1.5]);
  });

  test('a 4th dimension becomes the leading axis', () => {
    const v = decodeVolume(writeNifti({ dims: [2, 2, 2, 3], type: 'float32', voxel: (x, y, z, t) => t }), 't.nii');
    expect(v.shape).toEqual([3, 2, 2, 2]);
    expect(v.data[8]).toBe(1);
  });

  test('truncated voxel data is an InputError naming the file', () => {
    const bytes = writeNifti({ dims: [4, 4, 4], type: 'float32', voxel, truncateBy: 10 });
    expect(() => decodeVolume(bytes, 'short.nii')).toThrow(InputError);
    expect(() => decodeVolume(bytes, 'short.nii')).toThrow(/short\.nii: truncated NIfTI data/);
  });

  test('gzip that is not NIfTI is an InputError', () => {
    expect(() => decodeVolume(gzipSync(Buffer.from('plain text')), 'x.nii.gz')).toThrow(InputError);
  });
});

describe('loaders', () => {
  test('fs-volume reads .npy, .nii and .nii.gz under basePath and refuses to leave it', async () => {
    await fs.writeFile(path.join(dir, 'a.npy'), writeNpy(ramp(8), [2, 2, 2]));
    await fs.writeFile(path.join(dir, 'b.nii'), writeNifti({ dims: [2, 2, 2], type: 'float32', voxel: (x) => x }));
    await fs.writeFile(path.join(dir, 'c.nii.gz'), writeNifti({ dims: [2, 2, 2], type: 'float32', voxel: (x) => x, gzip: true }));
    const loader = new FsVolumeLoader({ basePath: dir });
    expect((await loader.load({ type: 'image_3d', value: 'a.npy' })).format).toBe('npy');
    expect((await loader.load({ type: 'image_3d', value: 'b.nii' })).format).toBe('nifti');
    expect((await loader.load({ type: 'image_3d', value: 'c.nii.gz' })).shape).toEqual([2, 2, 2]);
    await expect(loader.load({ type: 'image_3d', value: '../outside.npy' })).rejects.toThrow(InputError);
    await expect(loader.load({ type: 'image_3d', value: 'missing.npy' })).rejects.toThrow(/missing\.npy: cannot read/);
    await expect(loader.load({ type: 'image_3d', value: 42 })).rejects.toThrow(InputError);
  });

  test('raw-volume takes bytes, {bytes}, base64 and {data, shape}', async () => {
    const npy = writeNpy(ramp(8), [2, 2, 2]);
    const loader = new RawVolumeLoader();
    for (const value of [npy, { bytes: npy }, npy.toString('base64'), { bytes: new Uint8Array(npy) }]) {
      const v = await loader.load({ type: 'image_3d', value });
      expect(Array.from(v.data)).toEqual(ramp(8));
    }
    const arr = await loader.load({ type: 'image_3d', value: { data: Int16Array.from(ramp(8)), shape: [2, 2, 2] } });
    expect(arr.format).toBe('array');
    expect(arr.data).toBeInstanceOf(Float32Array);
    await expect(loader.load({ type: 'image_3d', value: { data: new Float32Array(7), shape: [2, 2, 2] } })).rejects.toThrow(InputError);
    await expect(loader.load({ type: 'image_3d', value: 12 })).rejects.toThrow(InputError);
  });
});
