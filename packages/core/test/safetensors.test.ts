import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  readSafetensors, SafetensorsCheckpoint, SafetensorsError, SafetensorsFile, serializeSafetensors, writeSafetensors,
} from '@multimeditron/core';
import { golden } from '../../../test/helpers/fixtures.js';

/** Independent header parse used to check the reader key by key. */
async function rawHeader(file: string): Promise<Record<string, any>> {
  const buf = await fs.readFile(file);
  const n = Number(buf.readBigUInt64LE(0));
  return JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
}

const FIXTURE_FILES = [
  'clip-tiny/model.safetensors',
  'whisper-tiny/model.safetensors',
  'expected/clip-tiny.safetensors',
  'expected/whisper-tiny.safetensors',
];

describe('safetensors reader on every fixture file', () => {
  test.each(FIXTURE_FILES)('%s: every key, dtype and shape', async (rel) => {
    const file = golden(rel);
    const header = await rawHeader(file);
    const buf = await fs.readFile(file);
    const dataStart = 8 + Number(buf.readBigUInt64LE(0));
    const { tensors } = await readSafetensors(file);
    const keys = Object.keys(header).filter((k) => k !== '__metadata__');
    expect([...tensors.keys()].sort()).toEqual(keys.sort());
    for (const k of keys) {
      const h = header[k];
      const t = tensors.get(k)!;
      expect(t.dtype).toBe(h.dtype);
      expect(t.shape).toEqual(h.shape);
      const [b, e] = h.data_offsets;
      const raw = buf.subarray(dataStart + b, dataStart + e);
      if (h.dtype === 'F32') {
        const ref = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
        expect(Buffer.from((t.data as Float32Array).buffer).equals(Buffer.from(ref.buffer))).toBe(true);
      } else if (h.dtype === 'I64') {
        expect(t.data).toBeInstanceOf(BigInt64Array);
        expect((t.data as BigInt64Array)[0]).toBe(raw.readBigInt64LE(0));
      } else if (h.dtype === 'U8') {
        expect(Buffer.from(t.data as Uint8Array).equals(raw)).toBe(true);
      }
    }
  });

  test('reads the 0-d logit_scale and skips nothing', async () => {
    const f = await SafetensorsFile.open(golden('clip-tiny/model.safetensors'));
    try {
      expect(f.info('logit_scale').shape).toEqual([]);
      const t = await f.read('logit_scale');
      expect(t.data.length).toBe(1);
      expect(f.info('vision_model.embeddings.position_ids').dtype).toBe('I64');
    } finally {
      await f.close();
    }
  });
});

describe('safetensors writer round trip', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-st-'));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('F32, F16, BF16, integers, 0-d and metadata', async () => {
    const file = path.join(dir, 'rt.safetensors');
    const vals = Float32Array.from([0, 1, -2.5, 65504, 1e-3, -0.333]);
    await writeSafetensors(file, {
      f32: { data: vals, shape: [2, 3] },
      f16: { data: vals, shape: [6], dtype: 'F16' },
      bf16: { data: vals, shape: [3, 2], dtype: 'BF16' },
      i32: { data: Int32Array.from([1, -2, 3]), shape: [3] },
      u8: { data: Uint8Array.from([0, 255]), shape: [2] },
      i64: { data: BigInt64Array.from([5n, -6n]), shape: [1, 2] },
      scalar: { data: Float32Array.from([7]), shape: [] },
    }, { files: '["a.png"]' });
    const { tensors, metadata } = await readSafetensors(file);
    expect(metadata).toEqual({ files: '["a.png"]' });
    expect(Array.from(tensors.get('f32')!.data as Float32Array)).toEqual(Array.from(vals));
    const f16 = tensors.get('f16')!.data as Float32Array;
    vals.forEach((v, i) => expect(Math.abs(f16[i]! - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 1e-7));
    const bf16 = tensors.get('bf16')!.data as Float32Array;
    vals.forEach((v, i) => expect(Math.abs(bf16[i]! - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -8 + 1e-30));
    expect(Array.from(tensors.get('i32')!.data as Int32Array)).toEqual([1, -2, 3]);
    expect(Array.from(tensors.get('u8')!.data as Uint8Array)).toEqual([0, 255]);
    expect(Array.from(tensors.get('i64')!.data as BigInt64Array)).toEqual([5n, -6n]);
    expect(tensors.get('scalar')!.shape).toEqual([]);
    // header is padded to a multiple of 8
    const buf = await fs.readFile(file);
    expect(Number(buf.readBigUInt64LE(0)) % 8).toBe(0);
  });

  test('sharded checkpoint through model.safetensors.index.json', async () => {
    const sdir = path.join(dir, 'sharded');
    await fs.mkdir(sdir);
    await writeSafetensors(path.join(sdir, 'model-00001-of-00002.safetensors'), { a: { data: Float32Array.from([1, 2]), shape: [2] } });
    await writeSafetensors(path.join(sdir, 'model-00002-of-00002.safetensors'), { b: { data: Float32Array.from([3]), shape: [1] } });
    await fs.writeFile(path.join(sdir, 'model.safetensors.index.json'), JSON.stringify({
      metadata: { total_size: 12 },
      weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' },
    }));
    const ck = await SafetensorsCheckpoint.open(sdir);
    try {
      expect(ck.keys().sort()).toEqual(['a', 'b']);
      expect(Array.from((await ck.read('b')).data as Float32Array)).toEqual([3]);
      expect(path.basename(ck.fileOf('a'))).toBe('model-00001-of-00002.safetensors');
    } finally {
      await ck.close();
    }
  });
});

describe('malformed safetensors give a typed error naming the file', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-st-bad-'));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  function withHeader(header: unknown, dataBytes: number, rawHeaderText?: string): Buffer {
    const h = Buffer.from(rawHeaderText ?? JSON.stringify(header));
    const out = Buffer.alloc(8 + h.length + dataBytes);
    out.writeBigUInt64LE(BigInt(h.length), 0);
    h.copy(out, 8);
    return out;
  }

  const cases: Array<[string, () => Buffer, RegExp]> = [
    ['header length past the end', () => {
      const b = serializeSafetensors({ a: { data: Float32Array.from([1]), shape: [1] } });
      b.writeBigUInt64LE(BigInt(b.length * 10), 0);
      return b;
    }, /runs past the end/],
    ['too short for the length', () => Buffer.from([1, 2, 3]), /too short/],
    ['non-JSON header', () => withHeader(null, 0, '{not json'), /not valid JSON/],
    ['offsets outside the data', () => withHeader({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 4), /outside the data/],
    ['overlapping tensors', () => withHeader({
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    }, 12), /overlap/],
    ['size not matching shape x dtype', () => withHeader({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8), /needs 12/],
    ['unknown dtype', () => withHeader({ a: { dtype: 'F8_E9', shape: [1], data_offsets: [0, 1] } }, 1), /unknown dtype/],
  ];

  test.each(cases)('%s', async (name, make, re) => {
    const file = path.join(dir, `${name.replace(/\W+/g, '_')}.safetensors`);
    await fs.writeFile(file, make());
    const err = await SafetensorsFile.open(file).then(() => null, (e) => e);
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.file).toBe(file);
    expect(err.message).toContain(file);
    expect(err.message).toMatch(re);
  });
});
