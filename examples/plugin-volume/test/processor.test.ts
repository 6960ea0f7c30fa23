import { ConfigValidationError, InputError } from '@multimeditron/core';
import { channelFirstShape, trilinearResize, VolumeConfig, VolumeProcessor, type Volume } from '../src/index.js';
import { referenceTrilinear, rng } from './helpers.js';

const vol = (data: ArrayLike<number>, shape: number[], source = 'v.npy'): Volume => ({
  data: Float32Array.from(data), shape, format: 'npy', source,
});

describe('VolumeConfig', () => {
  test('defaults follow the original: (32,256,256) / (4,16,16) / pool (2,2,2) = 256 tokens', () => {
    const c = new VolumeConfig();
    expect(c.modelType).toBe('volume_3d');
    expect(c.modalityType).toBe('image_3d');
    expect(c.volumeSize).toEqual([32, 256, 256]);
    expect(c.patchGrid()).toEqual([8, 16, 16]);
    expect(c.tokenGrid()).toEqual([4, 8, 8]);
    expect(c.numEmbeddings()).toBe(256);
    expect(c.projectionType).toBe('mlp');
  });

  test('divisibility is checked per axis, with the offending path', () => {
    expect(() => new VolumeConfig({ volumeSize: [30, 256, 256] })).toThrow(ConfigValidationError);
    try {
      new VolumeConfig({ volumeSize: [32, 64, 64], patchSize: [4, 16, 16], poolSize: [2, 3, 2] });
      throw new Error('no error');
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigValidationError);
      expect((e as ConfigValidationError).path).toBe('/poolSize/1');
    }
  });

  test('schema violations and unknown keys', () => {
    expect(() => new VolumeConfig({ patchSize: [4, 16] as never })).toThrow(/patchSize/);
    expect(() => new VolumeConfig({ projectionType: 'pixel_shuffle' as never })).toThrow(ConfigValidationError);
    const c = VolumeConfig.fromJSON({ hiddenSize: 8, volumeSize: [4, 8, 8], patchSize: [2, 4, 4], note: 'kept' });
    expect(c.toJSON()).toMatchObject({ note: 'kept', hiddenSize: 8, seed: 0 });
  });
});

describe('trilinearResize', () => {
  test('known values: 2 -> 4 samples with half-pixel centres', () => {
    const out = trilinearResize(Float32Array.from([0, 1]), [1, 1, 2], [1, 1, 4]);
    expect(Array.from(out)).toEqual([0, 0.25, 0.75, 1]);
  });

  test.each([
    [[3, 5, 7], [6, 4, 9]],
    [[8, 8, 8], [4, 4, 4]],
    [[2, 9, 3], [5, 5, 5]],
    [[5, 1, 6], [3, 4, 2]],
    [[4, 6, 8], [4, 6, 8]],
  ])('%j -> %j matches the 8-corner reference', (inShape, outShape) => {
    const r = rng(inShape.reduce((a, b) => a * 10 + b, 0));
    const src = Float32Array.from({ length: inShape[0]! * inShape[1]! * inShape[2]! }, () => r() * 200 - 100);
    const got = trilinearResize(src, inShape as [number, number, number], outShape as [number, number, number]);
    const want = referenceTrilinear(src, inShape, outShape);
    expect(got.length).toBe(want.length);
    let maxErr = 0;
    for (let i = 0; i < got.length; i++) maxErr = Math.max(maxErr, Math.abs(got[i]! - want[i]!));
    expect(maxErr).toBeLessThan(1e-4); // float32 storage of values up to 100
  });
});

describe('VolumeProcessor', () => {
  const config = new VolumeConfig({ volumeSize: [4, 8, 8], patchSize: [2, 4, 4], poolSize: [1, 2, 2], hiddenSize: 8, embedDim: 4 });
  const processor = new VolumeProcessor(config);

  test('resizes to (1, D, H, W), scales to [0, 1], reports the pooled token count', () => {
    const r = rng(7);
    const data = Array.from({ length: 3 * 5 * 6 }, () => r() * 1000 - 300);
    const out = processor.process({ type: 'image_3d', value: vol(data, [3, 5, 6]) });
    expect(out.value.shape).toEqual([1, 4, 8, 8]);
    expect(out.numEmbeddings).toBe(2);
    expect(processor.inputName).toBe('pixel_values');
    const resized = referenceTrilinear(Float32Array.from(data), [3, 5, 6], [4, 8, 8]);
    const min = Math.min(...resized);
    const max = Math.max(...resized);
    const got = out.value.data;
    expect(Math.min(...got)).toBe(0);
    expect(Math.max(...got)).toBeCloseTo(1, 6);
    for (let i = 0; i < got.length; i++) expect(Math.abs(got[i]! - (resized[i]! - min) / (max - min))).toBeLessThan(1e-5);
  });

  test('a constant volume becomes zeros; a volume already at size is not resampled', () => {
    const flat = processor.process({ type: 'image_3d', value: vol(new Array(4 * 8 * 8).fill(5), [4, 8, 8]) });
    expect(flat.value.data.every((v) => v === 0)).toBe(true);
    const same = Array.from({ length: 256 }, (_, i) => i);
    const out = processor.process({ type: 'image_3d', value: vol(same, [4, 8, 8]) });
    expect(Array.from(out.value.data)).toEqual(same.map((v) => Math.fround(v / 255)));
  });

  test.each([NaN, Infinity, -Infinity])('non-finite value %p is an InputError naming the file', (bad) => {
    const data = new Array(4 * 8 * 8).fill(1);
    data[17] = bad;
    const run = () => processor.process({ type: 'image_3d', value: vol(data, [4, 8, 8], 'scan_07.nii.gz') });
    expect(run).toThrow(InputError);
    expect(run).toThrow(/scan_07\.nii\.gz: volume contains non-finite values/);
  });

  test('channel axis: 1 first or last is accepted, 3 channels or a 2-D array is refused', () => {
    const data = new Array(4 * 8 * 8).fill(0).map((_, i) => i);
    expect(processor.process({ type: 'image_3d', value: vol(data, [1, 4, 8, 8]) }).value.shape).toEqual([1, 4, 8, 8]);
    const last = new Array(6 * 8 * 8).fill(0).map((_, i) => i);
    expect(processor.process({ type: 'image_3d', value: vol(last, [6, 8, 8, 1]) }).value.shape).toEqual([1, 4, 8, 8]);
    // as in the original, a leading axis of size 1, 3 or 4 is read as channels when both ends could be
    expect(() => processor.process({ type: 'image_3d', value: vol(data, [4, 8, 8, 1]) })).toThrow(/4 channels/);
    const rgb = new Array(3 * 4 * 4 * 4).fill(1);
    expect(() => processor.process({ type: 'image_3d', value: vol(rgb, [3, 4, 4, 4], 'rgb.npy') })).toThrow(/rgb\.npy: expected a single-channel volume/);
    expect(() => processor.process({ type: 'image_3d', value: vol([1, 2, 3, 4], [2, 2], 'flat.npy') })).toThrow(InputError);
    expect(() => processor.process({ type: 'image_3d', value: 'not decoded' as never })).toThrow(InputError);
    expect(channelFirstShape([5, 6, 7, 8])).toBeUndefined();
  });
});
