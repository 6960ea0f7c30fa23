import { promises as fs } from 'node:fs';
import { decodeAudio, getResampler, resample, SincResampler, WhisperFeatureExtractor } from '@multimeditron/plugin-audio';
import { diff, expectedData, golden, TOL, WHISPER_DIR } from './helpers.js';

let stereo: Float32Array;
let fe: WhisperFeatureExtractor;

beforeAll(async () => {
  const raw = await decodeAudio(await fs.readFile(golden('audio', 'stereo_44k1.wav')), 'stereo_44k1.wav');
  stereo = raw.samples;
  fe = await WhisperFeatureExtractor.fromPretrained(WHISPER_DIR);
});

afterAll(() => fe.dispose());

/**
 * torchaudio 0.13's `functional.resample` transcribed literally (dense kernel of 2 * width + orig taps per
 * phase, the clamp of t to +-width, zero padding of width / width + orig, strided convolution), in float64.
 */
function torchaudioDense(x: Float32Array, origFreq: number, newFreq: number, lpw = 6, rolloff = 0.99): Float64Array {
  const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);
  const g = gcd(origFreq, newFreq);
  const orig = origFreq / g;
  const nw = newFreq / g;
  const base = Math.min(orig, nw) * rolloff;
  const width = Math.ceil((lpw * orig) / base);
  const taps = 2 * width + orig;
  const kernel: Float64Array[] = [];
  for (let j = 0; j < nw; j++) {
    const row = new Float64Array(taps);
    for (let k = 0; k < taps; k++) {
      let t = (-j / nw + (k - width) / orig) * base;
      t = Math.min(lpw, Math.max(-lpw, t));
      const window = Math.cos((t * Math.PI) / lpw / 2) ** 2;
      const tt = t * Math.PI;
      row[k] = (tt === 0 ? 1 : Math.sin(tt) / tt) * window * (base / orig);
    }
    kernel.push(row);
  }
  const padded = new Float64Array(x.length + 2 * width + orig);
  padded.set(x, width);
  const blocks = Math.floor((padded.length - taps) / orig) + 1;
  const out = new Float64Array(blocks * nw);
  for (let i = 0; i < blocks; i++) {
    for (let j = 0; j < nw; j++) {
      let acc = 0;
      for (let k = 0; k < taps; k++) acc += kernel[j]![k]! * padded[i * orig + k]!;
      out[i * nw + j] = acc;
    }
  }
  return out.subarray(0, Math.ceil((nw * x.length) / orig));
}

/** Plain linear interpolation, no low-pass: what the test below shows is not good enough. */
function linearResample(x: Float32Array, orig: number, target: number): Float32Array {
  const n = Math.ceil((x.length * target) / orig);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const p = (i * orig) / target;
    const i0 = Math.floor(p);
    const f = p - i0;
    y[i] = (x[i0] ?? 0) * (1 - f) + (x[i0 + 1] ?? x[i0] ?? 0) * f;
  }
  return y;
}

describe('sinc resampler', () => {
  test('stereo_44k1 -> 16 kHz matches the stored torchaudio waveform_16k within atol 1e-5', async () => {
    const ref = await expectedData('stereo_44k1.waveform_16k');
    const y = resample(stereo, 44100, 16000);
    expect(y.length).toBe(ref.length);
    expect(y.length).toBe(Math.ceil((stereo.length * 16000) / 44100));
    const d = diff(y, ref);
    process.stdout.write(`plugin-audio resampler parity: waveform_16k max abs ${d.max.toExponential(3)}, mean ${d.mean.toExponential(3)}\n`);
    expect(d.max).toBeLessThanOrEqual(TOL.waveform_16k.atol);
  });

  test('linear interpolation fails the fixtures where the sinc resampler passes', async () => {
    const refWave = await expectedData('stereo_44k1.waveform_16k');
    const refFeat = await expectedData('stereo_44k1.input_features');
    const ours = resample(stereo, 44100, 16000);
    const lin = linearResample(stereo, 44100, 16000);
    // waveform: strict tolerance
    expect(diff(ours, refWave).max).toBeLessThanOrEqual(TOL.waveform_16k.atol);
    expect(diff(lin, refWave).max).toBeGreaterThan(100 * TOL.waveform_16k.atol);
    // features: ours passes the strict end-to-end check and the loose one; linear fails the loose one
    const loose = TOL.resampled_other_resampler_loose;
    const fOurs = diff(fe.extract(ours), refFeat);
    const fLin = diff(fe.extract(lin), refFeat);
    process.stdout.write(`plugin-audio resampler features: sinc max ${fOurs.max.toExponential(3)} mean ${fOurs.mean.toExponential(3)}; linear max ${fLin.max.toExponential(3)} mean ${fLin.mean.toExponential(3)}\n`);
    expect(fOurs.max).toBeLessThanOrEqual(TOL.resampled_input_features_torchaudio_sinc_reimplementation.atol);
    expect(fOurs.mean).toBeLessThanOrEqual(loose.input_features_mean_abs);
    expect(fLin.mean > loose.input_features_mean_abs || fLin.max > loose.input_features_max_abs).toBe(true);
  });

  test.each([[22050, 16000], [48000, 16000], [8000, 16000], [16000, 44100]])(
    '%i -> %i equals a literal transcription of torchaudio (dense kernel) up to float32 rounding',
    (from, to) => {
      const x = Float32Array.from({ length: 1500 }, (_, i) => Math.sin(i * 0.05) * 0.6 + ((i * 7919) % 101) / 400 - 0.125);
      const y = resample(x, from, to);
      const ref = torchaudioDense(x, from, to);
      expect(y.length).toBe(ref.length);
      let max = 0;
      for (let i = 0; i < y.length; i++) max = Math.max(max, Math.abs(y[i]! - ref[i]!));
      expect(max).toBeLessThan(1e-6); // float32 output rounding
      // and before rounding: the sparse kernel is the dense one without its zeros
      const r = new SincResampler(from, to);
      expect(r.width).toBe(Math.ceil((6 * r.orig) / (Math.min(r.orig, r.new) * 0.99)));
    },
  );

  test('keeps a 440 Hz tone (8 kHz -> 16 kHz) and attenuates a 12 kHz tone by > 50 dB (48 kHz -> 16 kHz)', () => {
    const tone = (rate: number, f: number, n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin((2 * Math.PI * f * i) / rate));
    const up = resample(tone(8000, 440, 8000), 8000, 16000);
    const exact = tone(16000, 440, 16000);
    expect(diff(up.subarray(200, 15800), exact.subarray(200, 15800)).max).toBeLessThan(2e-3);
    const down = resample(tone(48000, 12000, 48000), 48000, 16000);
    let rms = 0;
    for (let i = 100; i < down.length - 100; i++) rms += down[i]! ** 2;
    expect(Math.sqrt(rms / (down.length - 200)) / Math.SQRT1_2).toBeLessThan(10 ** (-50 / 20));
  });

  test('equal rates return the input; kernels are cached; bad rates are RangeErrors', () => {
    const x = Float32Array.of(1, 2, 3);
    expect(resample(x, 16000, 16000)).toBe(x);
    expect(getResampler(44100, 16000)).toBe(getResampler(44100, 16000));
    expect(() => new SincResampler(0, 16000)).toThrow(RangeError);
    expect(() => new SincResampler(44100.5, 16000)).toThrow(RangeError);
  });
});
