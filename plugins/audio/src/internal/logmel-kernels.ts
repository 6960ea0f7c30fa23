/**
 * The WebAssembly SIMD kernels of the log-mel extractor (asm/logmel.ts, embedded as base64) and the layout of
 * their memory: the padded signal, the window, a block of FFT inputs/outputs, the permutation of PFFFT's
 * unordered output, the sparse mel bank, a power-spectrum scratch and the frame-major mel matrix.
 * One instance per extractor (its memory holds that extractor's buffers); the compiled module is shared.
 * @internal
 * @module
 */
import type { SparseMelFilters } from '../mel.js';
import { LOGMEL_WASM_BASE64 } from './logmel-wasm.js';

// The project's TypeScript lib (ES2023, no DOM) has no WebAssembly typings: declare what is used.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmModule {
  readonly __brand: 'WebAssembly.Module';
}
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: Record<string, unknown>) => { exports: unknown };
};

interface KernelExports {
  memory: WasmMemory;
  windowPairs(signal: number, win: number, nFft: number, hop: number, t0: number, count: number, dst: number): void;
  powerMel(
    spectra: number, perm: number, n: number, bins: number, count: number,
    firstBin: number, offsets: number, weights: number, nm: number,
    pw: number, melT: number, t0: number, frames: number,
  ): number;
  log10InPlace(x: number, n: number): void;
  transposeScale(src: number, rows: number, cols: number, dst: number, low: number): void;
}

let compiled: WasmModule | undefined;

/** Pairs of frames per block: the block (64 x 2 x n_fft floats = 200 KB for Whisper) stays in cache. */
export const BLOCK_PAIRS = 64;

/** Sizes the kernels are laid out for. */
export interface KernelLayout {
  /** Padded signal length (n_samples + n_fft). */
  signalLength: number;
  nFft: number;
  hop: number;
  /** Frames kept (3000). */
  frames: number;
  sparse: SparseMelFilters;
  window: Float64Array;
  /** Per bin: float indices of Re Z[k], Im Z[k], Re Z[n-k], Im Z[n-k] in PFFFT's unordered output. */
  perm: Int32Array;
}

/** The kernels with their buffers. Views stay valid: the memory is sized once, at construction. */
export class LogMelKernels {
  private readonly x: KernelExports;
  /** The padded signal (n_samples + n_fft floats). */
  readonly signal: Float32Array;
  /** FFT input/output block (BLOCK_PAIRS x 2 n_fft floats). */
  readonly block: Float32Array;
  /** Frame-major mel values (frames x n_mels floats). */
  readonly melT: Float32Array;
  /** The features, mel-major (n_mels x frames floats). */
  readonly features: Float32Array;
  private readonly p: {
    signal: number; win: number; block: number; perm: number; firstBin: number; offsets: number; weights: number;
    pw: number; melT: number; features: number;
  };

  constructor(private readonly layout: KernelLayout) {
    compiled ??= new WebAssembly.Module(Buffer.from(LOGMEL_WASM_BASE64, 'base64'));
    this.x = new WebAssembly.Instance(compiled, {}).exports as unknown as KernelExports;
    const { signalLength, nFft, frames, sparse } = layout;
    const bins = nFft / 2 + 1;
    let at = 65536; // above the module's own (tiny) static data
    const take = (bytes: number) => {
      const ptr = at;
      at += Math.ceil((bytes + 16) / 16) * 16; // + 16: SIMD loads may read a little past a buffer
      return ptr;
    };
    this.p = {
      signal: take(4 * signalLength),
      win: take(4 * nFft),
      block: take(4 * 2 * nFft * BLOCK_PAIRS),
      perm: take(4 * 4 * bins),
      firstBin: take(4 * sparse.numMelFilters),
      offsets: take(4 * (sparse.numMelFilters + 1)),
      weights: take(8 * sparse.weights.length),
      pw: take(8 * 2 * bins),
      melT: take(4 * frames * sparse.numMelFilters),
      features: take(4 * frames * sparse.numMelFilters),
    };
    const mem = this.x.memory;
    const need = Math.ceil(at / 65536) - mem.buffer.byteLength / 65536;
    if (need > 0) mem.grow(need);
    const buf = mem.buffer;
    this.signal = new Float32Array(buf, this.p.signal, signalLength);
    this.block = new Float32Array(buf, this.p.block, 2 * nFft * BLOCK_PAIRS);
    this.melT = new Float32Array(buf, this.p.melT, frames * sparse.numMelFilters);
    this.features = new Float32Array(buf, this.p.features, frames * sparse.numMelFilters);
    new Float32Array(buf, this.p.win, nFft).set(layout.window);
    // byte offsets into a spectrum, for the kernel's loads
    new Int32Array(buf, this.p.perm, 4 * bins).set(layout.perm.map((i) => 4 * i));
    new Int32Array(buf, this.p.firstBin, sparse.numMelFilters).set(sparse.firstBin);
    new Int32Array(buf, this.p.offsets, sparse.numMelFilters + 1).set(sparse.offsets);
    new Float64Array(buf, this.p.weights, sparse.weights.length).set(sparse.weights); // float32-rounded values
  }

  /** Windows and interleaves `count` pairs of frames starting at frame `t0` into {@link block}. */
  windowPairs(t0: number, count: number): void {
    const { nFft, hop } = this.layout;
    this.x.windowPairs(this.p.signal, this.p.win, nFft, hop, t0, count, this.p.block);
  }

  /** Power spectra + sparse mel bank of the `count` spectra in {@link block}, rows from frame `t0`. Returns the max. */
  powerMel(t0: number, count: number): number {
    const { nFft, frames, sparse } = this.layout;
    return this.x.powerMel(
      this.p.block, this.p.perm, nFft, nFft / 2 + 1, count,
      this.p.firstBin, this.p.offsets, this.p.weights, sparse.numMelFilters,
      this.p.pw, this.p.melT, t0, frames,
    );
  }

  /** {@link features} = transposed `(max(melT, low) + 4) / 4`. */
  transposeScale(low: number): void {
    const { frames, sparse } = this.layout;
    this.x.transposeScale(this.p.melT, frames, sparse.numMelFilters, this.p.features, low);
  }

  /** log10 of the first `n` values of {@link melT}, in place (n a multiple of 4). */
  log10(n: number): void {
    this.x.log10InPlace(this.p.melT, n);
  }
}
