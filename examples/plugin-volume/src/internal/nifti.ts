/**
 * NIfTI-1/NIfTI-2 (`.nii`, `.nii.gz`) decoding through `nifti-reader-js`, which detects the format, inflates
 * gzip and parses the header. The voxel data is converted here: every scalar datatype, either byte order,
 * with `scl_slope`/`scl_inter` applied, to float32 in C order (slowest axis first).
 *
 * NIfTI stores x fastest, then y, then z (then t). Read as a C-order array that is shape
 * `[nz, ny, nx]` (`[nt, nz, ny, nx]` with a 4th dimension), i.e. `(D, H, W)`, without moving any data.
 * @internal
 * @module
 */
import * as nifti from 'nifti-reader-js';
import { InputError } from '@multimeditron/core';

/** A decoded NIfTI image. */
export interface NiftiVolume {
  data: Float32Array;
  /** `[D, H, W]` or `[T, D, H, W]`. */
  shape: number[];
  /** Voxel size in the same order as `shape` (from `pixdim`). */
  spacing: number[];
}

const GZIP = [0x1f, 0x8b];

/** True when the bytes are gzip-compressed (a `.nii.gz` candidate). */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === GZIP[0] && bytes[1] === GZIP[1];
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

/** True when the (inflated) bytes carry a NIfTI-1 or NIfTI-2 header. */
export function isNifti(bytes: Uint8Array): boolean {
  try {
    return nifti.isNIFTI(toArrayBuffer(bytes));
  } catch {
    return false;
  }
}

type Reader = (view: DataView, offset: number, little: boolean) => number;

/** NIfTI datatype codes we read, with their byte size and reader. */
const DATATYPES: Record<number, { size: number; read: Reader; name: string }> = {
  2: { size: 1, read: (v, o) => v.getUint8(o), name: 'uint8' },
  4: { size: 2, read: (v, o, le) => v.getInt16(o, le), name: 'int16' },
  8: { size: 4, read: (v, o, le) => v.getInt32(o, le), name: 'int32' },
  16: { size: 4, read: (v, o, le) => v.getFloat32(o, le), name: 'float32' },
  64: { size: 8, read: (v, o, le) => v.getFloat64(o, le), name: 'float64' },
  256: { size: 1, read: (v, o) => v.getInt8(o), name: 'int8' },
  512: { size: 2, read: (v, o, le) => v.getUint16(o, le), name: 'uint16' },
  768: { size: 4, read: (v, o, le) => v.getUint32(o, le), name: 'uint32' },
  1024: { size: 8, read: (v, o, le) => Number(v.getBigInt64(o, le)), name: 'int64' },
  1280: { size: 8, read: (v, o, le) => Number(v.getBigUint64(o, le)), name: 'uint64' },
};

/** Decodes a `.nii` or `.nii.gz` file. Throws an {@link InputError} naming `source` on bad input. */
export function parseNifti(bytes: Uint8Array, source: string): NiftiVolume {
  let buf = toArrayBuffer(bytes);
  try {
    if (nifti.isCompressed(buf)) buf = nifti.decompress(buf) as ArrayBuffer;
  } catch (e) {
    throw new InputError(source, `cannot inflate gzip data: ${(e as Error).message}`, { cause: e });
  }
  if (!nifti.isNIFTI(buf)) throw new InputError(source, 'not a NIfTI-1/NIfTI-2 file (no valid header, or a .hdr/.img pair)');
  let header: nifti.NIFTI1 | nifti.NIFTI2;
  try {
    header = nifti.readHeader(buf);
  } catch (e) {
    throw new InputError(source, `malformed NIfTI header: ${(e as Error).message}`, { cause: e });
  }
  const ndim = header.dims[0]!;
  if (!(ndim >= 1 && ndim <= 7)) throw new InputError(source, `NIfTI dim[0] = ${ndim} is out of range 1..7`);
  const dims = header.dims.slice(1, ndim + 1).map((d) => Math.max(1, d));
  if (dims.slice(4).some((d) => d !== 1)) {
    throw new InputError(source, `NIfTI image has ${ndim} dimensions (${dims.join('x')}); only 3-D volumes (and a 4th channel/time axis) are supported`);
  }
  const [nx = 1, ny = 1, nz = 1, nt = 1] = dims;
  const type = DATATYPES[header.datatypeCode];
  if (!type) throw new InputError(source, `NIfTI datatype ${header.datatypeCode} is not a supported scalar type`);
  const count = nx * ny * nz * nt;
  const start = Math.floor(header.vox_offset);
  const needed = count * type.size;
  if (start + needed > buf.byteLength) {
    throw new InputError(source, `truncated NIfTI data: ${nx}x${ny}x${nz}x${nt} ${type.name} needs ${needed} bytes from offset ${start}, file has ${buf.byteLength}`);
  }
  const view = new DataView(buf, start, needed);
  const little = header.littleEndian;
  const data = new Float32Array(count);
  const slope = header.scl_slope;
  const scaled = Number.isFinite(slope) && slope !== 0 && !(slope === 1 && header.scl_inter === 0);
  const inter = Number.isFinite(header.scl_inter) ? header.scl_inter : 0;
  for (let i = 0, o = 0; i < count; i++, o += type.size) {
    const v = type.read(view, o, little);
    data[i] = scaled ? v * slope + inter : v;
  }
  const px = header.pixDims;
  const spacing = [px[3] ?? 1, px[2] ?? 1, px[1] ?? 1];
  return nt > 1
    ? { data, shape: [nt, nz, ny, nx], spacing: [px[4] ?? 1, ...spacing] }
    : { data, shape: [nz, ny, nx], spacing };
}
