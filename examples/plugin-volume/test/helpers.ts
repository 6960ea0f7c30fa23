/**
 * Test fixtures written from the file-format specifications, independently of the plugin's readers:
 * `.npy` (numpy/lib/format.py) and NIfTI-1 single-file images (nifti1.h), plus a plain-JS trilinear
 * reference that samples the 8 corners of every output voxel directly.
 */
import { gzipSync } from 'node:zlib';

/** NumPy dtype descriptors the writer supports, with their byte size and a DataView writer. */
const NPY_WRITERS: Record<string, { size: number; write: (v: DataView, o: number, x: number, le: boolean) => void }> = {
  f4: { size: 4, write: (v, o, x, le) => v.setFloat32(o, x, le) },
  f8: { size: 8, write: (v, o, x, le) => v.setFloat64(o, x, le) },
  i2: { size: 2, write: (v, o, x, le) => v.setInt16(o, x, le) },
  u1: { size: 1, write: (v, o, x) => v.setUint8(o, x) },
  i8: { size: 8, write: (v, o, x, le) => v.setBigInt64(o, BigInt(x), le) },
  u2: { size: 2, write: (v, o, x, le) => v.setUint16(o, x, le) },
};

/**
 * Writes an .npy file. `values` are given in C order; with `fortran` they are stored in Fortran order,
 * as numpy does for `np.asfortranarray`. `descr` like `<f4`, `>i2`, `|u1`.
 */
export function writeNpy(values: ArrayLike<number>, shape: number[], descr = '<f4', opts: { fortran?: boolean; version?: 1 | 2 } = {}): Buffer {
  const code = descr.slice(1);
  const le = descr[0] !== '>';
  const w = NPY_WRITERS[code];
  if (!w) throw new Error(`writer: unsupported ${descr}`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let dict = `{'descr': '${descr}', 'fortran_order': ${opts.fortran ? 'True' : 'False'}, 'shape': ${shapeText}, }`;
  const version = opts.version ?? 1;
  const pre = version === 1 ? 10 : 12;
  const total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  dict = dict + ' '.repeat(total - pre - dict.length - 1) + '\n';
  const count = shape.reduce((a, b) => a * b, 1);
  const buf = Buffer.alloc(total + count * w.size);
  buf.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0], 0);
  if (version === 1) buf.writeUInt16LE(dict.length, 8);
  else buf.writeUInt32LE(dict.length, 8);
  buf.write(dict, pre, 'latin1');
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  // Fortran order: the flat position of C index (i0..in) is sum(ik * prod(shape[<k])).
  const cStrides = shape.map((_, k) => shape.slice(k + 1).reduce((a, b) => a * b, 1));
  for (let c = 0; c < count; c++) {
    let pos = c;
    if (opts.fortran) {
      pos = 0;
      let f = 1;
      for (let k = 0; k < shape.length; k++) {
        const ik = Math.floor(c / cStrides[k]!) % shape[k]!;
        pos += ik * f;
        f *= shape[k]!;
      }
    }
    w.write(view, total + pos * w.size, values[c]!, le);
  }
  return buf;
}

/** NIfTI-1 datatype codes used by the tests. */
export const NIFTI_TYPES = { uint8: [2, 1], int16: [4, 2], float32: [16, 4], float64: [64, 8] } as const;

/**
 * Writes a single-file NIfTI-1 image (`n+1`): the 348-byte header, 4 extension bytes, voxels at offset 352,
 * x fastest. `voxel(x, y, z, t)` gives each value.
 */
export function writeNifti(opts: {
  dims: number[]; // [nx, ny, nz] or [nx, ny, nz, nt]
  type: keyof typeof NIFTI_TYPES;
  voxel: (x: number, y: number, z: number, t: number) => number;
  littleEndian?: boolean;
  slope?: number;
  inter?: number;
  pixdim?: number[];
  gzip?: boolean;
  truncateBy?: number;
}): Buffer {
  const le = opts.littleEndian ?? true;
  const [code, size] = NIFTI_TYPES[opts.type];
  const [nx = 1, ny = 1, nz = 1, nt = 1] = opts.dims;
  const count = nx * ny * nz * nt;
  const buf = Buffer.alloc(352 + count * size);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  v.setInt32(0, 348, le); // sizeof_hdr
  v.setInt16(40, opts.dims.length, le); // dim[0]
  opts.dims.forEach((d, i) => v.setInt16(40 + 2 * (i + 1), d, le));
  for (let i = opts.dims.length + 1; i < 8; i++) v.setInt16(40 + 2 * i, 1, le);
  v.setInt16(70, code, le); // datatype
  v.setInt16(72, size * 8, le); // bitpix
  const pixdim = opts.pixdim ?? [1, 1, 1];
  v.setFloat32(76, 1, le); // pixdim[0] = qfac
  pixdim.forEach((p, i) => v.setFloat32(76 + 4 * (i + 1), p, le));
  v.setFloat32(108, 352, le); // vox_offset
  v.setFloat32(112, opts.slope ?? 0, le); // scl_slope
  v.setFloat32(116, opts.inter ?? 0, le); // scl_inter
  buf.write('n+1\0', 344, 'latin1'); // magic
  let o = 352;
  for (let t = 0; t < nt; t++)
    for (let z = 0; z < nz; z++)
      for (let y = 0; y < ny; y++)
        for (let x = 0; x < nx; x++, o += size) {
          const val = opts.voxel(x, y, z, t);
          if (opts.type === 'uint8') v.setUint8(o, val);
          else if (opts.type === 'int16') v.setInt16(o, val, le);
          else if (opts.type === 'float32') v.setFloat32(o, val, le);
          else v.setFloat64(o, val, le);
        }
  const out = opts.truncateBy ? buf.subarray(0, buf.length - opts.truncateBy) : buf;
  return opts.gzip ? gzipSync(out) : out;
}

/**
 * Plain trilinear interpolation with half-pixel centres (align_corners=False), one output voxel at a time:
 * locate the source position on each axis, take the 8 surrounding voxels and weight them.
 */
export function referenceTrilinear(src: ArrayLike<number>, [d, h, w]: number[], [D, H, W]: number[]): Float64Array {
  const at = (z: number, y: number, x: number) => src[(z * h + y) * w + x]!;
  const locate = (o: number, n: number, m: number): [number, number, number] => {
    let s = ((o + 0.5) * n) / m - 0.5;
    if (s < 0) s = 0;
    const i0 = Math.min(Math.floor(s), n - 1);
    const i1 = i0 < n - 1 ? i0 + 1 : i0;
    return [i0, i1, s - i0];
  };
  const out = new Float64Array(D * H * W);
  for (let z = 0; z < D; z++) {
    const [z0, z1, fz] = locate(z, d, D);
    for (let y = 0; y < H; y++) {
      const [y0, y1, fy] = locate(y, h, H);
      for (let x = 0; x < W; x++) {
        const [x0, x1, fx] = locate(x, w, W);
        let acc = 0;
        for (const [zi, wz] of [[z0, 1 - fz], [z1, fz]] as const)
          for (const [yi, wy] of [[y0, 1 - fy], [y1, fy]] as const)
            for (const [xi, wx] of [[x0, 1 - fx], [x1, fx]] as const) acc += wz * wy * wx * at(zi, yi, xi);
        out[(z * H + y) * W + x] = acc;
      }
    }
  }
  return out;
}

/** A seeded pseudo-random generator (mulberry32) for reproducible test volumes. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
