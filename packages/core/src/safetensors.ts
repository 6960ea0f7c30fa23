/**
 * safetensors reader and writer.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON header
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {str: str}}`), then the data buffer;
 * offsets are relative to the start of the data buffer.
 *
 * The reader opens the file, reads and validates only the header, then reads each tensor's byte range on
 * demand (`FileHandle.read` at its offset), so a checkpoint is never held in memory twice. Float tensors
 * (F16, BF16, F32, F64) are returned as float32; integer tensors keep an integer typed array.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { SafetensorsError } from './errors.js';
import { shapeSize } from './tensor.js';

/** Every dtype of the safetensors spec that this reader understands. */
export type SafetensorsDtype =
  | 'F64' | 'F32' | 'F16' | 'BF16'
  | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

/** Bytes per element of each dtype. */
export const DTYPE_SIZES: Readonly<Record<SafetensorsDtype, number>> = Object.freeze({
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
});

/** Float dtypes (read as float32). */
export const FLOAT_DTYPES: ReadonlySet<SafetensorsDtype> = new Set(['F64', 'F32', 'F16', 'BF16']);

/** Header entry of one tensor. */
export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offsets in the file: [begin, end). */
  begin: number;
  end: number;
}

/** Typed arrays returned by the reader. */
export type TensorData =
  | Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint32Array | Uint16Array | Uint8Array
  | BigInt64Array | BigUint64Array;

/** A tensor as read: float dtypes come back as `Float32Array` with `dtype` the stored one. */
export interface ReadTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: TensorData;
}

// ---- half-precision conversion -------------------------------------------------------------------------

const F16_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) t[h] = s * m * 2 ** -24;
    else if (e === 31) t[h] = m ? NaN : s * Infinity;
    else t[h] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

function f16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = F16_TABLE[src[i]!]!;
  return out;
}

function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
  return new Float32Array(out.buffer);
}

/** float32 -> IEEE half, round to nearest even (for the writer). */
function f32ToF16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  let exp = ((u >>> 23) & 0xff) - 127 + 15;
  let mant = u & 0x7fffff;
  if (((u >>> 23) & 0xff) === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (exp << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

function f32ToBf16(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  if ((u & 0x7f800000) === 0x7f800000 && u & 0x7fffff) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Views `bytes` as a typed array of the given dtype (floats upcast to float32). A buffer the bytes fill
 * entirely (what the reader allocates per tensor) is used in place; otherwise the bytes are copied to an
 * aligned buffer first.
 */
function decode(dtype: SafetensorsDtype, bytes: Uint8Array): TensorData {
  const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
  const buf = (whole ? bytes.buffer : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) as ArrayBuffer;
  switch (dtype) {
    case 'F32': return new Float32Array(buf);
    case 'F64': return Float32Array.from(new Float64Array(buf));
    case 'F16': return f16ToF32(new Uint16Array(buf));
    case 'BF16': return bf16ToF32(new Uint16Array(buf));
    case 'I64': return new BigInt64Array(buf);
    case 'U64': return new BigUint64Array(buf);
    case 'I32': return new Int32Array(buf);
    case 'U32': return new Uint32Array(buf);
    case 'I16': return new Int16Array(buf);
    case 'U16': return new Uint16Array(buf);
    case 'I8': return new Int8Array(buf);
    case 'U8': case 'BOOL': return new Uint8Array(buf);
  }
}

// ---- reader ---------------------------------------------------------------------------------------------

/** The largest header we accept (the reference implementation uses 100 MB). */
const MAX_HEADER = 100_000_000;
/** The largest single read (Node caps one read at 2 GiB - 1). */
const MAX_READ = 0x4000_0000;

/** An open safetensors file. Close it with {@link close} (or use {@link readSafetensors}). */
export class SafetensorsFile {
  private constructor(
    readonly file: string,
    private readonly handle: fs.FileHandle,
    private readonly entries: Map<string, TensorInfo>,
    /** The `__metadata__` string map (empty if absent). */
    readonly metadata: Record<string, string>,
  ) {}

  /** Opens `file` and validates its header. Throws {@link SafetensorsError} naming the file. */
  static async open(file: string): Promise<SafetensorsFile> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(file, 'r');
    } catch (e) {
      throw new SafetensorsError(file, `cannot open: ${(e as Error).message}`, { cause: e });
    }
    try {
      const { entries, metadata } = await readHeader(file, handle);
      return new SafetensorsFile(file, handle, entries, metadata);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  /** Tensor names, in header order. */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  /** Whether the file holds a tensor named `key`. */
  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Dtype, shape and byte range of a tensor. */
  info(key: string): TensorInfo {
    const e = this.entries.get(key);
    if (!e) throw new SafetensorsError(this.file, `no tensor named "${key}"`);
    return e;
  }

  /** Reads one tensor's bytes and decodes them (floats upcast to float32). */
  async read(key: string): Promise<ReadTensor> {
    const info = this.info(key);
    const n = info.end - info.begin;
    const bytes = new Uint8Array(n);
    // one read per tensor at its offset; loop because a single read returns at most 2 GiB
    let done = 0;
    while (done < n) {
      const { bytesRead } = await this.handle.read(bytes, done, Math.min(n - done, MAX_READ), info.begin + done);
      if (bytesRead === 0) throw new SafetensorsError(this.file, `short read for "${key}" (${done} of ${n} bytes)`);
      done += bytesRead;
    }
    return { dtype: info.dtype, shape: [...info.shape], data: decode(info.dtype, bytes) };
  }

  /** Reads a float tensor as a float32 tfjs tensor. The caller owns (and must dispose) it. */
  async readTensor(key: string): Promise<tf.Tensor> {
    const t = await this.read(key);
    if (!FLOAT_DTYPES.has(t.dtype)) {
      if (t.data instanceof Int32Array || t.data instanceof Int16Array || t.data instanceof Int8Array ||
          t.data instanceof Uint16Array || t.data instanceof Uint8Array) {
        return tf.tensor(Int32Array.from(t.data), t.shape, 'int32');
      }
      throw new SafetensorsError(this.file, `"${key}" has dtype ${t.dtype}, which has no tfjs equivalent`);
    }
    return tf.tensor(t.data as Float32Array, t.shape, 'float32');
  }

  /** Closes the file handle. */
  async close(): Promise<void> {
    await this.handle.close();
  }
}

async function readHeader(file: string, handle: fs.FileHandle) {
  const size = (await handle.stat()).size;
  if (size < 8) throw new SafetensorsError(file, `file is ${size} bytes, too short for the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  await handle.read(lenBuf, 0, 8, 0);
  const len = lenBuf.readBigUInt64LE(0);
  if (len > BigInt(size - 8)) {
    throw new SafetensorsError(file, `header length ${len} runs past the end of the file (${size} bytes)`);
  }
  if (len > BigInt(MAX_HEADER)) throw new SafetensorsError(file, `header length ${len} exceeds ${MAX_HEADER} bytes`);
  const n = Number(len);
  const hbuf = Buffer.alloc(n);
  await handle.read(hbuf, 0, n, 8);
  let header: unknown;
  try {
    header = JSON.parse(hbuf.toString('utf8'));
  } catch (e) {
    throw new SafetensorsError(file, `header is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new SafetensorsError(file, 'header must be a JSON object');
  }
  const dataStart = 8 + n;
  const dataSize = size - dataStart;
  const entries = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  const ranges: Array<[number, number, string]> = [];
  for (const [key, raw] of Object.entries(header as Record<string, unknown>)) {
    if (key === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw) ||
          !Object.values(raw).every((v) => typeof v === 'string')) {
        throw new SafetensorsError(file, '__metadata__ must be an object of strings');
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!e || typeof e !== 'object') throw new SafetensorsError(file, `entry "${key}" is not an object`);
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_SIZES)) {
      throw new SafetensorsError(file, `tensor "${key}" has unknown dtype ${JSON.stringify(e.dtype)}`);
    }
    const dtype = e.dtype as SafetensorsDtype;
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(file, `tensor "${key}" has an invalid shape ${JSON.stringify(e.shape)}`);
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[0] > off[1]) {
      throw new SafetensorsError(file, `tensor "${key}" has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const [b, en] = off as [number, number];
    if (en > dataSize) {
      throw new SafetensorsError(file, `tensor "${key}" offsets [${b}, ${en}] lie outside the data (${dataSize} bytes)`);
    }
    const expected = shapeSize(e.shape as number[]) * DTYPE_SIZES[dtype];
    if (en - b !== expected) {
      throw new SafetensorsError(
        file,
        `tensor "${key}" spans ${en - b} bytes but ${dtype}[${(e.shape as number[]).join(', ')}] needs ${expected}`,
      );
    }
    entries.set(key, { dtype, shape: e.shape as number[], begin: dataStart + b, end: dataStart + en });
    ranges.push([b, en, key]);
  }
  ranges.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1]!;
    const cur = ranges[i]!;
    if (cur[0] < prev[1]) throw new SafetensorsError(file, `tensors "${prev[2]}" and "${cur[2]}" overlap`);
  }
  return { entries, metadata };
}

/** Reads every tensor of one file into memory (small files, tests). */
export async function readSafetensors(file: string): Promise<{ tensors: Map<string, ReadTensor>; metadata: Record<string, string> }> {
  const f = await SafetensorsFile.open(file);
  try {
    const tensors = new Map<string, ReadTensor>();
    for (const k of f.keys()) tensors.set(k, await f.read(k));
    return { tensors, metadata: f.metadata };
  } finally {
    await f.close();
  }
}

// ---- checkpoints (single file or sharded) ----------------------------------------------------------------

/**
 * A model checkpoint: `model.safetensors`, or the shards listed by `model.safetensors.index.json`. Opens
 * each shard once, lazily; close it when done.
 */
export class SafetensorsCheckpoint {
  private readonly open = new Map<string, SafetensorsFile>();

  private constructor(
    /** The file or index the checkpoint was opened from. */
    readonly source: string,
    /** tensor name -> shard file. */
    private readonly weightMap: Map<string, string>,
    private readonly infos: Map<string, TensorInfo & { file: string }>,
  ) {}

  /**
   * Opens a checkpoint from a folder (prefers `model.safetensors`, then `model.safetensors.index.json`), a
   * `.safetensors` file, or an index file.
   */
  static async open(fileOrDir: string): Promise<SafetensorsCheckpoint> {
    let target = fileOrDir;
    const stat = await fs.stat(fileOrDir).catch((e) => {
      throw new SafetensorsError(fileOrDir, `cannot open: ${(e as Error).message}`, { cause: e });
    });
    if (stat.isDirectory()) {
      const single = path.join(fileOrDir, 'model.safetensors');
      const index = path.join(fileOrDir, 'model.safetensors.index.json');
      if (await exists(single)) target = single;
      else if (await exists(index)) target = index;
      else throw new SafetensorsError(fileOrDir, 'no model.safetensors or model.safetensors.index.json in this folder');
    }
    const weightMap = new Map<string, string>();
    const infos = new Map<string, TensorInfo & { file: string }>();
    const files: string[] = [];
    if (target.endsWith('.json')) {
      let index: { weight_map?: Record<string, string> };
      try {
        index = JSON.parse(await fs.readFile(target, 'utf8'));
      } catch (e) {
        throw new SafetensorsError(target, `cannot read the shard index: ${(e as Error).message}`, { cause: e });
      }
      if (!index.weight_map || typeof index.weight_map !== 'object') throw new SafetensorsError(target, 'index has no weight_map');
      for (const [k, f] of Object.entries(index.weight_map)) {
        if (typeof f !== 'string' || f.includes('..') || path.isAbsolute(f)) {
          throw new SafetensorsError(target, `weight_map entry "${k}" names an invalid shard ${JSON.stringify(f)}`);
        }
        weightMap.set(k, path.join(path.dirname(target), f));
      }
      files.push(...new Set(weightMap.values()));
    } else {
      files.push(target);
    }
    const ckpt = new SafetensorsCheckpoint(target, weightMap, infos);
    try {
      for (const f of files) {
        const sf = await SafetensorsFile.open(f);
        ckpt.open.set(f, sf);
        for (const k of sf.keys()) {
          if (weightMap.size && weightMap.get(k) !== f) continue;
          infos.set(k, { ...sf.info(k), file: f });
        }
      }
      for (const [k, f] of weightMap) {
        if (!infos.has(k)) throw new SafetensorsError(f, `shard does not contain "${k}" listed in ${path.basename(target)}`);
      }
    } catch (e) {
      await ckpt.close();
      throw e;
    }
    return ckpt;
  }

  /** Tensor names across every shard. */
  keys(): string[] {
    return [...this.infos.keys()];
  }

  /** Whether the checkpoint holds a tensor named `key`. */
  has(key: string): boolean {
    return this.infos.has(key);
  }

  /** Dtype, shape, byte range and shard file of a tensor. */
  info(key: string): TensorInfo & { file: string } {
    const i = this.infos.get(key);
    if (!i) throw new SafetensorsError(this.source, `no tensor named "${key}"`);
    return i;
  }

  /** The file holding `key`. */
  fileOf(key: string): string {
    return this.info(key).file;
  }

  /** Reads one tensor from its shard (floats upcast to float32). */
  async read(key: string): Promise<ReadTensor> {
    return this.open.get(this.fileOf(key))!.read(key);
  }

  /** Reads a float tensor as a float32 tfjs tensor (caller disposes). */
  async readTensor(key: string): Promise<tf.Tensor> {
    return this.open.get(this.fileOf(key))!.readTensor(key);
  }

  /** Metadata of the first shard. */
  get metadata(): Record<string, string> {
    return this.open.values().next().value?.metadata ?? {};
  }

  /** Closes every open shard. */
  async close(): Promise<void> {
    for (const f of this.open.values()) await f.close();
    this.open.clear();
  }
}

async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(() => true, () => false);
}

// ---- writer ---------------------------------------------------------------------------------------------

/** A tensor to write: a typed array (or tfjs tensor) and, for floats, the dtype to store. */
export interface WritableTensor {
  data: TensorData | ArrayLike<number>;
  shape: number[];
  /** Stored dtype; default F32 for float data, I32/U8/... according to the array type. */
  dtype?: SafetensorsDtype;
}

function encode(name: string, t: WritableTensor): { dtype: SafetensorsDtype; bytes: Uint8Array } {
  const n = shapeSize(t.shape);
  if (t.data.length !== n) throw new SafetensorsError('<writer>', `tensor "${name}" has ${t.data.length} values for shape [${t.shape}]`);
  const d = t.data;
  const dtype: SafetensorsDtype =
    t.dtype ??
    (d instanceof Int32Array ? 'I32' : d instanceof Uint8Array ? 'U8' : d instanceof BigInt64Array ? 'I64' :
      d instanceof Int16Array ? 'I16' : d instanceof Int8Array ? 'I8' : d instanceof Uint16Array ? 'U16' :
        d instanceof Uint32Array ? 'U32' : d instanceof BigUint64Array ? 'U64' : d instanceof Float64Array ? 'F64' : 'F32');
  let arr: ArrayBufferView;
  switch (dtype) {
    case 'F32': arr = d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>); break;
    case 'F64': arr = Float64Array.from(d as ArrayLike<number>); break;
    case 'F16': arr = Uint16Array.from(d as ArrayLike<number>, f32ToF16); break;
    case 'BF16': arr = Uint16Array.from(d as ArrayLike<number>, f32ToBf16); break;
    case 'I64': arr = d instanceof BigInt64Array ? d : BigInt64Array.from(d as ArrayLike<number>, (v) => BigInt(v)); break;
    case 'U64': arr = d instanceof BigUint64Array ? d : BigUint64Array.from(d as ArrayLike<number>, (v) => BigInt(v)); break;
    case 'I32': arr = Int32Array.from(d as ArrayLike<number>); break;
    case 'U32': arr = Uint32Array.from(d as ArrayLike<number>); break;
    case 'I16': arr = Int16Array.from(d as ArrayLike<number>); break;
    case 'U16': arr = Uint16Array.from(d as ArrayLike<number>); break;
    case 'I8': arr = Int8Array.from(d as ArrayLike<number>); break;
    case 'U8': case 'BOOL': arr = Uint8Array.from(d as ArrayLike<number>); break;
  }
  return { dtype, bytes: new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength) };
}

/** Serialises tensors (in the given order) and optional string metadata to a safetensors buffer. */
export function serializeSafetensors(
  tensors: Map<string, WritableTensor> | Record<string, WritableTensor>,
  metadata?: Record<string, string>,
): Buffer {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header['__metadata__'] = metadata;
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === '__metadata__') throw new SafetensorsError('<writer>', 'a tensor may not be named __metadata__');
    const { dtype, bytes } = encode(name, t);
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    blobs.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const hbytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + hbytes.length + offset);
  out.writeBigUInt64LE(BigInt(hbytes.length), 0);
  hbytes.copy(out, 8);
  let pos = 8 + hbytes.length;
  for (const b of blobs) {
    out.set(b, pos);
    pos += b.byteLength;
  }
  return out;
}

/** Writes a safetensors file atomically (temporary file, then rename). */
export async function writeSafetensors(
  file: string,
  tensors: Map<string, WritableTensor> | Record<string, WritableTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  const buf = serializeSafetensors(tensors, metadata);
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  await fs.writeFile(tmp, buf);
  await fs.rename(tmp, file);
}
