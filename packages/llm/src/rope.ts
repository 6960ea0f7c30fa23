/**
 * Rotary position embeddings, computed as Hugging Face `transformers` does (`modeling_rope_utils.py`): the
 * inverse frequencies in float32, the llama3 smoothing of low/high frequencies, then for each position
 * `angle = f32(inv_freq) * f32(position)` rounded to float32 before cos/sin. Tables are built on the host.
 * @module
 */
import type { DecoderConfig } from './config.js';

const f32 = Math.fround;

/** `1 / theta^(2i/d)` for i < d/2, in float32 like `torch.arange(0, d, 2).float() / d`. */
export function defaultInvFreq(rotaryDim: number, theta: number): Float32Array {
  const out = new Float32Array(rotaryDim / 2);
  for (let i = 0; i < out.length; i++) out[i] = f32(1 / f32(theta ** f32((2 * i) / rotaryDim)));
  return out;
}

/** The inverse frequencies of a config (default, linear or llama3 rope). */
export function ropeInvFreq(config: Pick<DecoderConfig, 'rotaryDim' | 'ropeTheta' | 'ropeScaling'>): Float32Array {
  const inv = defaultInvFreq(config.rotaryDim, config.ropeTheta);
  const s = config.ropeScaling;
  if (!s) return inv;
  if (s.ropeType === 'linear') return inv.map((v) => f32(v / s.factor));
  // llama3: wavelengths longer than original/low_freq_factor are divided by factor, shorter than
  // original/high_freq_factor kept, and the band in between interpolated smoothly.
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return inv.map((v) => {
    const wavelen = f32((2 * Math.PI) / v);
    if (wavelen > lowWavelen) return f32(v / s.factor);
    if (wavelen < highWavelen) return v;
    const smooth = f32((s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor));
    return f32(f32(f32((1 - smooth) * v) / s.factor) + f32(smooth * v));
  });
}

/**
 * cos and sin tables [positions.length, rotaryDim] (the half-frequencies repeated twice, as
 * `torch.cat((freqs, freqs), -1)`), for any list of positions.
 */
export function ropeTables(invFreq: Float32Array, positions: ArrayLike<number>): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  const d = half * 2;
  const cos = new Float32Array(positions.length * d);
  const sin = new Float32Array(positions.length * d);
  for (let p = 0; p < positions.length; p++) {
    const pos = f32(positions[p]!);
    for (let i = 0; i < half; i++) {
      const a = f32(invFreq[i]! * pos);
      const c = Math.cos(a);
      const s = Math.sin(a);
      cos[p * d + i] = c;
      cos[p * d + i + half] = c;
      sin[p * d + i] = s;
      sin[p * d + i + half] = s;
    }
  }
  return { cos, sin };
}
