import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  readSafetensors, SafetensorsCheckpoint, SafetensorsError, SafetensorsFile, selectBackend, serializeSafetensors, writeSafetensors,
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

describe('half-precision checkpoints written by others read exactly', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-st-half-'));
    await selectBackend({ backend: 'wasm' });
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** A file built byte by byte (not by our writer): one tensor per entry, raw little-endian uint16 words. */
  async function handMade(name: string, entries: Record<string, { dtype: string; words: number[]; shape: number[] }>): Promise<string> {
    const header: Record<string, unknown> = {};
    const chunks: Buffer[] = [];
    let off = 0;
    for (const [k, e] of Object.entries(entries)) {
      const b = Buffer.alloc(e.words.length * 2);
      e.words.forEach((w, i) => b.writeUInt16LE(w, i * 2));
      header[k] = { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + b.length] };
      chunks.push(b);
      off += b.length;
    }
    const h = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    const file = path.join(dir, name);
    await fs.writeFile(file, Buffer.concat([len, h, ...chunks]));
    return file;
  }

  // bit pattern -> exact value (IEEE 754 binary16 and bfloat16)
  const F16: Array<[number, number]> = [
    [0x3c00, 1], [0xc000, -2], [0x7bff, 65504], [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24], [0x0400, 2 ** -14],
    [0x3555, 0.333251953125], [0x7c00, Infinity], [0xfc00, -Infinity], [0x8000, -0], [0x0000, 0],
  ];
  const BF16: Array<[number, number]> = [
    [0x3f80, 1], [0xc000, -2], [0x4049, 3.140625], [0x7f7f, 3.3895313892515355e38], [0x0001, 2 ** -133], [0x0080, 2 ** -126],
    [0x7f80, Infinity], [0xff80, -Infinity], [0x8000, -0], [0xbeab, -0.333984375],
  ];

  test('F16 and BF16 bit patterns (normals, subnormals, extremes, infinities, signed zero, NaN) upcast to float32', async () => {
    const file = await handMade('half.safetensors', {
      f16: { dtype: 'F16', words: F16.map(([w]) => w), shape: [F16.length] },
      bf16: { dtype: 'BF16', words: BF16.map(([w]) => w), shape: [BF16.length] },
      nan: { dtype: 'F16', words: [0x7e00, 0x7c01], shape: [2] },
      bnan: { dtype: 'BF16', words: [0x7fc0], shape: [1] },
      grid: { dtype: 'BF16', words: [0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0], shape: [2, 3] },
    });
    const { tensors } = await readSafetensors(file);
    expect(tensors.get('f16')!.dtype).toBe('F16');
    expect(tensors.get('f16')!.data).toBeInstanceOf(Float32Array);
    expect(Array.from(tensors.get('f16')!.data as Float32Array)).toEqual(F16.map(([, v]) => Math.fround(v)));
    expect(Array.from(tensors.get('bf16')!.data as Float32Array)).toEqual(BF16.map(([, v]) => Math.fround(v)));
    expect(Object.is((tensors.get('f16')!.data as Float32Array)[9], -0)).toBe(true);
    expect(Array.from(tensors.get('nan')!.data as Float32Array).every(Number.isNaN)).toBe(true);
    expect(Number.isNaN((tensors.get('bnan')!.data as Float32Array)[0])).toBe(true);
    // through a checkpoint, as a float32 tfjs tensor
    const ck = await SafetensorsCheckpoint.open(file);
    const before = tf.memory().numTensors;
    try {
      const t = await ck.readTensor('grid');
      expect(t.dtype).toBe('float32');
      expect(t.shape).toEqual([2, 3]);
      expect(t.arraySync()).toEqual([[1, 2, 3], [4, 5, 6]]);
      t.dispose();
    } finally {
      await ck.close();
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  test('our F16/BF16 writer rounds to nearest even (ties, overflow to infinity, subnormals)', async () => {
    const file = path.join(dir, 'rounding.safetensors');
    // 1 + 2^-11 is halfway between two halves: ties to even (1); 1 + 3 * 2^-11 ties up to 1 + 2^-9
    const f16In = Float32Array.from([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 2 ** -25, 2 ** -24 * 1.5]);
    const bf16In = Float32Array.from([1 + 2 ** -8, 1 + 3 * 2 ** -8, -0.1]);
    await writeSafetensors(file, { a: { data: f16In, shape: [5], dtype: 'F16' }, b: { data: bf16In, shape: [3], dtype: 'BF16' } });
    const buf = await fs.readFile(file);
    const start = 8 + Number(buf.readBigUInt64LE(0));
    const words = (from: number, n: number) => Array.from({ length: n }, (_, i) => buf.readUInt16LE(start + from + 2 * i));
    expect(words(0, 5)).toEqual([0x3c00, 0x3c02, 0x7c00, 0x0000, 0x0002]);
    expect(words(10, 3)).toEqual([0x3f80, 0x3f82, 0xbdcd]);
  });
});

describe('the reader reads one tensor at a time, by offset', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-st-lazy-'));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('opening reads only the header; each tensor read is exactly its byte range; the file is never slurped', async () => {
    const file = path.join(dir, 'big.safetensors');
    const n = 64 * 1024;
    await writeSafetensors(file, {
      a: { data: new Float32Array(n).fill(1), shape: [n] },
      b: { data: new Float32Array(n).fill(2), shape: [256, 256] },
      c: { data: Float32Array.from([3]), shape: [] },
    });
    const size = (await fs.stat(file)).size;
    const reads: Array<[number, number]> = [];
    const promises = (await import('node:fs')).promises;
    const realOpen = promises.open;
    const realReadFile = promises.readFile;
    let readFileCalls = 0;
    promises.open = (async (...args: Parameters<typeof realOpen>) => {
      const h = await realOpen(...args);
      const realRead = h.read.bind(h) as (...a: unknown[]) => Promise<{ bytesRead: number }>;
      (h as unknown as { read: unknown }).read = (buffer: Uint8Array, offset: number, length: number, position: number) => {
        reads.push([position, length]);
        return realRead(buffer, offset, length, position);
      };
      return h;
    }) as typeof realOpen;
    promises.readFile = ((...args: Parameters<typeof realReadFile>) => {
      readFileCalls++;
      return realReadFile(...args);
    }) as typeof realReadFile;
    try {
      const f = await SafetensorsFile.open(file);
      const headerLen = size - (2 * n * 4 + 4) - 8;
      expect(reads).toEqual([[0, 8], [8, headerLen]]);
      reads.length = 0;
      const b = await f.read('b');
      expect(reads).toEqual([[f.info('b').begin, n * 4]]);
      expect(f.info('b').end - f.info('b').begin).toBe(n * 4);
      expect((b.data as Float32Array)[n - 1]).toBe(2);
      // the decoded array is a view of the one buffer read, not a copy of it
      expect((b.data as Float32Array).buffer.byteLength).toBe(n * 4);
      reads.length = 0;
      await f.read('c');
      await f.read('a');
      expect(reads).toEqual([[f.info('c').begin, 4], [f.info('a').begin, n * 4]]);
      await f.close();
      expect(readFileCalls).toBe(0);
    } finally {
      promises.open = realOpen;
      promises.readFile = realReadFile;
    }
  });
});
