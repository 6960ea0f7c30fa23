// AssemblyScript source of the SIMD kernels of the exact (Pillow) resampler. Compiled by
// scripts/build-wasm.mjs (npm run build:wasm) into src/internal/resample-wasm.ts (base64). The JavaScript side
// (src/internal/pillow-resample.ts) computes the fixed-point taps and lays out the buffers; these loops only
// accumulate. Every buffer is read up to 16 bytes past its end: the caller pads them.

const HALF: i32 = 1 << 21;
const SHIFT: i32 = 22;

@inline function clamp8(acc: v128): v128 {
  return i32x4.max_s(i32x4.min_s(i32x4.shr_s(acc, SHIFT), i32x4.splat(255)), i32x4.splat(0));
}

/**
 * Horizontal pass over interleaved RGB uint8 rows: for each of `rows` rows and each output column o, the sum
 * over its window of pixel * weight, stored as uint8 RGB into `tmp`. Taps go in pairs through
 * `i32x4.dot_i16x8_s`: the pixels of taps t and t+1 are shuffled to i16 lanes [R0 R1 G0 G1 B0 B1 0 0] and
 * multiplied with [w0 w1 w0 w1 w0 w1 0 0]. The 22-bit weights do not fit in i16, so each is split as
 * w = hi * 2048 + lo (lo in 0..2047) and the two dot products are recombined: exact in i32.
 * `start`, `pairs`: i32 per output column; `wvec`: per output column `maxPairs` x (hi vector, lo vector).
 */
export function hpass(src: usize, width: i32, rows: i32, start: usize, pairs: usize, wvec: usize, maxPairs: i32, outW: i32, tmp: usize): void {
  const half = i32x4.splat(HALF);
  const zero = i32x4.splat(0);
  const rowBytes = <usize>(width * 3);
  for (let r = 0; r < rows; r++) {
    const rowBase = src + <usize>r * rowBytes;
    const outBase = tmp + <usize>(r * outW * 3);
    for (let o = 0; o < outW; o++) {
      let accH = zero;
      let accL = zero;
      const n = load<i32>(pairs + (<usize>o << 2));
      let p = rowBase + <usize>(load<i32>(start + (<usize>o << 2)) * 3);
      let wp = wvec + <usize>(o * maxPairs) * 32;
      for (let k = 0; k < n; k++) {
        const px = i8x16.shuffle(v128.load64_zero(p), zero, 0, 16, 3, 16, 1, 16, 4, 16, 2, 16, 5, 16, 16, 16, 16, 16);
        accH = i32x4.add(accH, i32x4.dot_i16x8_s(px, v128.load(wp)));
        accL = i32x4.add(accL, i32x4.dot_i16x8_s(px, v128.load(wp + 16)));
        p += 6;
        wp += 32;
      }
      const c = clamp8(i32x4.add(i32x4.add(i32x4.shl(accH, 11), accL), half));
      const q = outBase + <usize>(o * 3);
      store<u8>(q, <u8>i32x4.extract_lane(c, 0));
      store<u8>(q + 1, <u8>i32x4.extract_lane(c, 1));
      store<u8>(q + 2, <u8>i32x4.extract_lane(c, 2));
    }
  }
}

/**
 * Vertical pass: for each output row o, sum over its window of rows of `tmp` (each `stride` bytes, row index
 * relative to the first row of tmp) times the weights, stored as uint8 into `out` (`stride` bytes per row).
 * `acc` is scratch space of at least `stride` rounded up to 8, times 4 bytes.
 */
export function vpass(tmp: usize, stride: i32, start: usize, len: usize, weights: usize, ksize: i32, outH: i32, rowFirst: i32, out: usize, acc: usize): void {
  const half = i32x4.splat(HALF);
  const wide = (stride + 7) & ~7;
  for (let o = 0; o < outH; o++) {
    for (let i = 0; i < wide; i += 4) v128.store(acc + (<usize>i << 2), half);
    const n = load<i32>(len + (<usize>o << 2));
    const r0 = load<i32>(start + (<usize>o << 2)) - rowFirst;
    const wp = weights + <usize>(o * ksize) * 4;
    for (let t = 0; t < n; t++) {
      const w = i32x4.splat(load<i32>(wp + (<usize>t << 2)));
      const row = tmp + <usize>((r0 + t) * stride);
      for (let i = 0; i < wide; i += 8) {
        const px = v128.load8x8_u(row + <usize>i);
        const a = acc + (<usize>i << 2);
        v128.store(a, i32x4.add(v128.load(a), i32x4.mul(i32x4.extend_low_i16x8_u(px), w)));
        v128.store(a + 16, i32x4.add(v128.load(a + 16), i32x4.mul(i32x4.extend_high_i16x8_u(px), w)));
      }
    }
    const dst = out + <usize>(o * stride);
    for (let i = 0; i < wide; i += 8) {
      const a = acc + (<usize>i << 2);
      const lo = clamp8(v128.load(a));
      const hi = clamp8(v128.load(a + 16));
      const b = i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(lo, hi), i16x8.splat(0));
      v128.store64_lane(dst + <usize>i, b, 0);
    }
  }
}
