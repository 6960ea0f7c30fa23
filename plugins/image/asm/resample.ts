// AssemblyScript source of the SIMD kernels of the exact (Pillow) resampler. Compiled by
// plugins/image/scripts/build-wasm.mjs into src/internal/resample-wasm.ts (base64). The JavaScript side
// (src/internal/pillow-resample.ts) computes the fixed-point taps and lays out the buffers; these loops only
// accumulate. Every buffer is read up to 16 bytes past its end: the caller pads them.

const HALF: i32 = 1 << 21;
const SHIFT: i32 = 22;

@inline function clamp8(acc: v128): v128 {
  return i32x4.max_s(i32x4.min_s(i32x4.shr_s(acc, SHIFT), i32x4.splat(255)), i32x4.splat(0));
}

/**
 * Horizontal pass over interleaved RGB uint8 rows: for each of `rows` rows starting at `rowFirst` and each
 * output column o: sum over the window of pixel * weight, stored as uint8 RGB into `tmp`.
 * `start`/`len`: i32 per output column; `weights`: i32, `ksize` per output column.
 */
export function hpass(src: usize, width: i32, rowFirst: i32, rows: i32, start: usize, len: usize, weights: usize, ksize: i32, outW: i32, tmp: usize): void {
  const half = i32x4.splat(HALF);
  const rowBytes = <usize>(width * 3);
  for (let r = 0; r < rows; r++) {
    const rowBase = src + <usize>(rowFirst + r) * rowBytes;
    const outBase = tmp + <usize>(r * outW * 3);
    for (let o = 0; o < outW; o++) {
      let acc0 = half;
      let acc1 = i32x4.splat(0);
      const n = load<i32>(len + (<usize>o << 2));
      let p = rowBase + <usize>(load<i32>(start + (<usize>o << 2)) * 3);
      let wp = weights + <usize>(o * ksize) * 4;
      let t = 0;
      for (; t + 1 < n; t += 2) {
        const px0 = i32x4.extend_low_i16x8_u(v128.load8x8_u(p));
        const px1 = i32x4.extend_low_i16x8_u(v128.load8x8_u(p + 3));
        acc0 = i32x4.add(acc0, i32x4.mul(px0, i32x4.splat(load<i32>(wp))));
        acc1 = i32x4.add(acc1, i32x4.mul(px1, i32x4.splat(load<i32>(wp + 4))));
        p += 6;
        wp += 8;
      }
      if (t < n) {
        const px = i32x4.extend_low_i16x8_u(v128.load8x8_u(p));
        acc0 = i32x4.add(acc0, i32x4.mul(px, i32x4.splat(load<i32>(wp))));
      }
      const c = clamp8(i32x4.add(acc0, acc1));
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
