/**
 * Mel filter banks ("slaney" mel scale, "slaney" area normalisation), as Hugging Face's `mel_filter_bank`,
 * librosa's `filters.mel` and openai/whisper's `mel_filters.npz` build them.
 * @module
 */

/** Slaney mel scale: linear below 1 kHz, logarithmic above. */
export function hertzToMelSlaney(hz: number): number {
  const minLogHz = 1000;
  const minLogMel = 15;
  const logstep = 27 / Math.log(6.4);
  return hz < minLogHz ? (3 * hz) / 200 : minLogMel + Math.log(hz / minLogHz) * logstep;
}

/** Inverse of {@link hertzToMelSlaney}. */
export function melToHertzSlaney(mel: number): number {
  const minLogHz = 1000;
  const minLogMel = 15;
  const logstep = Math.log(6.4) / 27;
  return mel < minLogMel ? (200 * mel) / 3 : minLogHz * Math.exp(logstep * (mel - minLogMel));
}

/** Options of {@link melFilterBank}. */
export interface MelFilterBankOptions {
  /** Number of FFT bins, `n_fft / 2 + 1`. */
  numFrequencyBins: number;
  /** Number of mel filters (80 for Whisper, 128 for large-v3). */
  numMelFilters: number;
  /** Sampling rate of the signal in Hz. */
  samplingRate: number;
  /** Lowest filter edge in Hz. Default 0. */
  minFrequency?: number;
  /** Highest filter edge in Hz. Default 8000 (Whisper's value, whatever the sampling rate). */
  maxFrequency?: number;
}

/**
 * A mel filter bank in sparse form: filter `j` has weights `weights[offsets[j] .. offsets[j + 1])` applying
 * to the consecutive FFT bins starting at `firstBin[j]`. Each triangle touches only a few bins, so applying
 * the bank costs about two multiply-adds per FFT bin instead of `numMelFilters` per bin.
 */
export interface SparseMelFilters {
  /** Number of filters. */
  numMelFilters: number;
  /** Number of FFT bins the filters apply to. */
  numFrequencyBins: number;
  /** Per filter: its first bin. */
  firstBin: Int32Array;
  /** Per filter j: its weights are `weights[offsets[j] .. offsets[j + 1])`; `numMelFilters + 1` entries. */
  offsets: Int32Array;
  /** The non-zero weights, rounded to float32, filter after filter. */
  weights: Float64Array;
}

/**
 * The dense filter bank, `numFrequencyBins x numMelFilters` row-major (Hugging Face's orientation), in
 * float64. Bin `k` sits at `k * (samplingRate / 2) / (numFrequencyBins - 1)` Hz. Filter `j` is the triangle
 * between mel points `j`, `j + 1`, `j + 2` (equally spaced in slaney mel from min to max frequency), scaled by
 * `2 / (h[j+2] - h[j])` so that every filter has unit area.
 */
export function melFilterBank(options: MelFilterBankOptions): Float64Array {
  const { numFrequencyBins: nb, numMelFilters: nm, samplingRate } = options;
  const fmin = options.minFrequency ?? 0;
  const fmax = options.maxFrequency ?? 8000;
  if (!(nb >= 2) || !(nm >= 1) || !(samplingRate > 0) || !(fmax > fmin)) {
    throw new RangeError(`invalid mel filter bank options ${JSON.stringify(options)}`);
  }
  const melMin = hertzToMelSlaney(fmin);
  const melMax = hertzToMelSlaney(fmax);
  const hz = new Float64Array(nm + 2);
  // numpy.linspace: start + i * step, the last point exactly the stop value
  const step = (melMax - melMin) / (nm + 1);
  for (let i = 0; i < nm + 2; i++) hz[i] = melToHertzSlaney(i === nm + 1 ? melMax : melMin + i * step);
  const out = new Float64Array(nb * nm);
  const nyquist = Math.floor(samplingRate / 2);
  for (let k = 0; k < nb; k++) {
    const f = (nyquist * k) / (nb - 1);
    for (let j = 0; j < nm; j++) {
      const down = (f - hz[j]!) / (hz[j + 1]! - hz[j]!);
      const up = (hz[j + 2]! - f) / (hz[j + 2]! - hz[j + 1]!);
      const tri = Math.max(0, Math.min(down, up));
      out[k * nm + j] = tri * (2 / (hz[j + 2]! - hz[j]!));
    }
  }
  return out;
}

/**
 * The filter bank rounded to float32 (as the reference applies it) in sparse form. Zero weights are
 * dropped; a filter with no non-zero weight (possible with many filters and a small FFT) gets an empty range.
 */
export function sparseMelFilters(dense: Float64Array, numFrequencyBins: number, numMelFilters: number): SparseMelFilters {
  const firstBin = new Int32Array(numMelFilters);
  const offsets = new Int32Array(numMelFilters + 1);
  const w: number[] = [];
  for (let j = 0; j < numMelFilters; j++) {
    let lo = -1;
    let hi = -1;
    for (let k = 0; k < numFrequencyBins; k++) {
      if (dense[k * numMelFilters + j] !== 0) {
        if (lo < 0) lo = k;
        hi = k;
      }
    }
    offsets[j] = w.length;
    firstBin[j] = Math.max(lo, 0);
    if (lo >= 0) for (let k = lo; k <= hi; k++) w.push(Math.fround(dense[k * numMelFilters + j]!));
  }
  offsets[numMelFilters] = w.length;
  return { numMelFilters, numFrequencyBins, firstBin, offsets, weights: Float64Array.from(w) };
}
