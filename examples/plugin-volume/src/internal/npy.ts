/**
 * A reader for NumPy's `.npy` format (versions 1.0, 2.0 and 3.0), written against the format's
 * specification (numpy/lib/format.py): magic `\x93NUMPY`, a version, a little-endian header length and a
 * Python-literal dict `{'descr': ..., 'fortran_order': ..., 'shape': (...)}`, then the raw data.
 *
 * Every numeric dtype is read in either byte order and converted to float32; Fortran-ordered arrays are
 * reordered to C order; truncated data and object (pickled) arrays are rejected.
 * @internal
 * @module
 */
import { InputError } from '@multimeditron/core';

/** A decoded array: C-order float32 data and its shape. */
export interface NpyArray {
  data: Float32Array;
  shape: number[];
  /** The stored dtype, e.g. `<f4`, `>i2`, `|u1`. */
  descr: string;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** True when `bytes` starts with the `.npy` magic string. */
export function isNpy(bytes: Uint8Array): boolean {
  return bytes.length >= MAGIC.length && MAGIC.every((b, i) => bytes[i] === b);
}

type Reader = (view: DataView, offset: number, little: boolean) => number;

const READERS: Record<string, { size: number; read: Reader }> = {
  b1: { size: 1, read: (v, o) => (v.getUint8(o) ? 1 : 0) },
  i1: { size: 1, read: (v, o) => v.getInt8(o) },
  u1: { size: 1, read: (v, o) => v.getUint8(o) },
  i2: { size: 2, read: (v, o, le) => v.getInt16(o, le) },
  u2: { size: 2, read: (v, o, le) => v.getUint16(o, le) },
  i4: { size: 4, read: (v, o, le) => v.getInt32(o, le) },
  u4: { size: 4, read: (v, o, le) => v.getUint32(o, le) },
  i8: { size: 8, read: (v, o, le) => Number(v.getBigInt64(o, le)) },
  u8: { size: 8, read: (v, o, le) => Number(v.getBigUint64(o, le)) },
  f2: { size: 2, read: (v, o, le) => halfToFloat(v.getUint16(o, le)) },
  f4: { size: 4, read: (v, o, le) => v.getFloat32(o, le) },
  f8: { size: 8, read: (v, o, le) => v.getFloat64(o, le) },
};

/** IEEE 754 binary16 to a JS number. */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/** Parses the header dict. Only the three keys the format defines are read. */
function parseHeader(text: string, source: string): { descr: string; fortran: boolean; shape: number[] } {
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]+)['"]/.exec(text)?.[1];
  const fortranRaw = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(text)?.[1];
  const shapeRaw = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortranRaw === undefined || shapeRaw === undefined) {
    throw new InputError(source, `malformed .npy header: ${JSON.stringify(text.trim())}`);
  }
  const shape = shapeRaw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => Number(s.replace(/L$/, '')));
  if (shape.some((n) => !Number.isInteger(n) || n < 0)) throw new InputError(source, `malformed .npy shape (${shapeRaw})`);
  return { descr, fortran: fortranRaw === 'True', shape };
}

/** Reorders Fortran-order (first index fastest) data to C order (last index fastest). */
function fortranToC(src: Float32Array, shape: number[]): Float32Array {
  const n = shape.length;
  if (n < 2) return src;
  const out = new Float32Array(src.length);
  const fStrides = new Array<number>(n);
  let s = 1;
  for (let k = 0; k < n; k++) {
    fStrides[k] = s;
    s *= shape[k]!;
  }
  const idx = new Array<number>(n).fill(0);
  for (let c = 0; c < out.length; c++) {
    let f = 0;
    for (let k = 0; k < n; k++) f += idx[k]! * fStrides[k]!;
    out[c] = src[f]!;
    for (let k = n - 1; k >= 0; k--) {
      if (++idx[k]! < shape[k]!) break;
      idx[k] = 0;
    }
  }
  return out;
}

/**
 * Decodes a `.npy` file. Throws an {@link InputError} naming `source` when the bytes are not a valid,
 * complete, numeric `.npy` array.
 */
export function parseNpy(bytes: Uint8Array, source: string): NpyArray {
  if (!isNpy(bytes)) throw new InputError(source, 'not a .npy file (missing the \\x93NUMPY magic)');
  if (bytes.length < 10) throw new InputError(source, 'truncated .npy header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6]!;
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new InputError(source, 'truncated .npy header');
    headerLen = view.getUint32(8, true);
    headerStart = 12;
  } else {
    throw new InputError(source, `unsupported .npy format version ${major}.${bytes[7]}`);
  }
  const dataStart = headerStart + headerLen;
  if (dataStart > bytes.length) throw new InputError(source, 'truncated .npy header');
  const headerText = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(headerStart, dataStart));
  const { descr, fortran, shape } = parseHeader(headerText, source);

  const order = descr[0];
  const code = order === '<' || order === '>' || order === '|' || order === '=' ? descr.slice(1) : descr;
  const little = order === '>' ? false : true; // '=' is native; numpy writes '<' on every little-endian machine
  const reader = READERS[code];
  if (!reader) {
    const why = code === 'O' ? 'object arrays (pickled data) are not supported' : `dtype ${JSON.stringify(descr)} is not a supported numeric type`;
    throw new InputError(source, why);
  }
  const count = shape.reduce((a, b) => a * b, 1);
  const needed = count * reader.size;
  if (bytes.length - dataStart < needed) {
    throw new InputError(source, `truncated .npy data: shape (${shape.join(', ')}) of ${descr} needs ${needed} bytes, found ${bytes.length - dataStart}`);
  }
  let data: Float32Array = new Float32Array(count);
  if (code === 'f4' && little && (bytes.byteOffset + dataStart) % 4 === 0) {
    data.set(new Float32Array(bytes.buffer, bytes.byteOffset + dataStart, count));
  } else {
    for (let i = 0, o = dataStart; i < count; i++, o += reader.size) data[i] = reader.read(view, o, little);
  }
  if (fortran) data = fortranToC(data, shape);
  return { data, shape, descr };
}
