/**
 * The raw form of a 3-D volume, as the loaders return it, and the decoders behind them.
 * @module
 */
import { InputError } from '@multimeditron/core';
import { isNpy, parseNpy } from './internal/npy.js';
import { isGzip, isNifti, parseNifti } from './internal/nifti.js';

/** The file formats a volume can come from. */
export type VolumeFormat = 'npy' | 'nifti' | 'array';

/** A decoded volume: float32 voxels in C order (last axis fastest) and the shape they were stored with. */
export interface Volume {
  /** Voxel values. */
  data: Float32Array;
  /** `[D, H, W]`, or with a channel axis first (`[C, D, H, W]`) or last (`[D, H, W, C]`). */
  shape: number[];
  /** Where the voxels came from. */
  format: VolumeFormat;
  /** The file name (or `<bytes>`, `<array>`) used in error messages. */
  source: string;
  /** Voxel size per axis of `shape`, when the file stores it (NIfTI `pixdim`). */
  spacing?: number[];
}

/** True for an object with a numeric typed array `data` and an integer `shape`. */
export function isArrayVolume(x: unknown): x is { data: ArrayLike<number>; shape: number[] } {
  if (typeof x !== 'object' || x === null) return false;
  const o = x as { data?: unknown; shape?: unknown };
  return (
    ArrayBuffer.isView(o.data) &&
    !(o.data instanceof DataView) &&
    !(o.data instanceof BigInt64Array) &&
    !(o.data instanceof BigUint64Array) &&
    Array.isArray(o.shape) &&
    o.shape.every((n) => Number.isInteger(n) && n >= 0)
  );
}

/**
 * Wraps an in-memory array (`{data, shape}` with any numeric typed array) as a {@link Volume}, converting
 * the data to float32. Throws an {@link InputError} when the data length does not match the shape.
 */
export function volumeFromArray(value: { data: ArrayLike<number>; shape: number[] }, source = '<array>'): Volume {
  const count = value.shape.reduce((a, b) => a * b, 1);
  if (value.data.length !== count) {
    throw new InputError(source, `data has ${value.data.length} values but shape (${value.shape.join(', ')}) needs ${count}`);
  }
  const data = value.data instanceof Float32Array ? value.data.slice() : Float32Array.from(value.data);
  return { data, shape: [...value.shape], format: 'array', source };
}

/** Guesses the format from a file name: `.npy`, `.nii` and `.nii.gz` are recognised. */
export function formatFromName(name: string): 'npy' | 'nifti' | undefined {
  const lower = name.toLowerCase();
  if (lower.endsWith('.npy')) return 'npy';
  if (lower.endsWith('.nii') || lower.endsWith('.nii.gz')) return 'nifti';
  return undefined;
}

/**
 * Decodes the bytes of a `.npy`, `.nii` or `.nii.gz` file. The format is sniffed from the content (the
 * NumPy magic, gzip, or a NIfTI header); `hint` (from the file name) only sharpens the error message.
 * Throws an {@link InputError} naming `source` on anything it cannot read.
 */
export function decodeVolume(bytes: Uint8Array, source: string, hint?: 'npy' | 'nifti'): Volume {
  if (isNpy(bytes)) {
    const a = parseNpy(bytes, source);
    return { data: a.data, shape: a.shape, format: 'npy', source };
  }
  if (isGzip(bytes) || isNifti(bytes)) {
    const v = parseNifti(bytes, source);
    return { data: v.data, shape: v.shape, format: 'nifti', source, spacing: v.spacing };
  }
  const expected = hint === 'npy' ? 'a .npy file' : hint === 'nifti' ? 'a NIfTI file' : 'a .npy or NIfTI (.nii, .nii.gz) file';
  throw new InputError(source, `not ${expected}: unrecognised content (${bytes.length} bytes)`, {
    suggestions: ['Volumes are read from NumPy .npy arrays or NIfTI-1/2 images.'],
  });
}
