/**
 * An independent float64 CLIP vision forward pass in plain loops (no tfjs), written from the fixtures
 * README's model formulas. Used to check checkpoint variants (half precision, GELU) for which the fixtures
 * store no expected tensors. Small models only.
 */
import type { ReadTensor } from '@multimeditron/core';

export interface RefConfig {
  hidden: number;
  inter: number;
  layers: number;
  heads: number;
  image: number;
  patch: number;
  act: 'quick_gelu' | 'gelu';
  eps: number;
}

function erf(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse; use a series / continued fraction with float64 accuracy.
  const t = Math.abs(x);
  if (t < 2.5) {
    let sum = t;
    let term = t;
    for (let n = 1; n < 100; n++) {
      term *= (-t * t) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // continued fraction for erfc
  let f = 0;
  for (let n = 60; n >= 1; n--) f = (n / 2) / (t + f);
  const erfc = Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f);
  return Math.sign(x) * (1 - erfc);
}

type W = (k: string) => Float64Array;

function layerNorm(x: Float64Array, rows: number, d: number, g: Float64Array, b: Float64Array, eps: number): Float64Array {
  const out = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x[r * d + i]!;
    mean /= d;
    let v = 0;
    for (let i = 0; i < d; i++) v += (x[r * d + i]! - mean) ** 2;
    v /= d;
    const inv = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < d; i++) out[r * d + i] = (x[r * d + i]! - mean) * inv * g[i]! + b[i]!;
  }
  return out;
}

/** y = x W^T + b with W (out, in). */
function linear(x: Float64Array, rows: number, inD: number, w: Float64Array, outD: number, b?: Float64Array): Float64Array {
  const out = new Float64Array(rows * outD);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outD; o++) {
      let s = b ? b[o]! : 0;
      for (let i = 0; i < inD; i++) s += x[r * inD + i]! * w[o * inD + i]!;
      out[r * outD + o] = s;
    }
  }
  return out;
}

/** Runs the reference on one image's pixel_values [3, S, S]. */
export function referenceClip(weights: Map<string, ReadTensor>, c: RefConfig, pixels: Float32Array) {
  const w: W = (k) => Float64Array.from(weights.get(k)!.data as Float32Array);
  const D = c.hidden;
  const g = c.image / c.patch;
  const n = g * g + 1;
  const pw = w('vision_model.embeddings.patch_embedding.weight');
  const h0 = new Float64Array(n * D);
  const cls = w('vision_model.embeddings.class_embedding');
  const pos = w('vision_model.embeddings.position_embedding.weight');
  for (let d = 0; d < D; d++) h0[d] = cls[d]! + pos[d]!;
  for (let py = 0; py < g; py++) {
    for (let px = 0; px < g; px++) {
      const t = 1 + py * g + px;
      for (let d = 0; d < D; d++) {
        let s = 0;
        for (let ch = 0; ch < 3; ch++) {
          for (let ky = 0; ky < c.patch; ky++) {
            for (let kx = 0; kx < c.patch; kx++) {
              s += pw[((d * 3 + ch) * c.patch + ky) * c.patch + kx]! * pixels[(ch * c.image + py * c.patch + ky) * c.image + px * c.patch + kx]!;
            }
          }
        }
        h0[t * D + d] = s + pos[t * D + d]!;
      }
    }
  }
  let h = layerNorm(h0, n, D, w('vision_model.pre_layrnorm.weight'), w('vision_model.pre_layrnorm.bias'), c.eps);
  const hidden = [h];
  const hd = D / c.heads;
  for (let l = 0; l < c.layers; l++) {
    const p = `vision_model.encoder.layers.${l}.`;
    const a = layerNorm(h, n, D, w(`${p}layer_norm1.weight`), w(`${p}layer_norm1.bias`), c.eps);
    const q = linear(a, n, D, w(`${p}self_attn.q_proj.weight`), D, w(`${p}self_attn.q_proj.bias`));
    const k = linear(a, n, D, w(`${p}self_attn.k_proj.weight`), D, w(`${p}self_attn.k_proj.bias`));
    const v = linear(a, n, D, w(`${p}self_attn.v_proj.weight`), D, w(`${p}self_attn.v_proj.bias`));
    const ctx = new Float64Array(n * D);
    for (let head = 0; head < c.heads; head++) {
      for (let i = 0; i < n; i++) {
        const scores = new Float64Array(n);
        let mx = -Infinity;
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let e = 0; e < hd; e++) s += q[i * D + head * hd + e]! * hd ** -0.5 * k[j * D + head * hd + e]!;
          scores[j] = s;
          mx = Math.max(mx, s);
        }
        let z = 0;
        for (let j = 0; j < n; j++) z += (scores[j] = Math.exp(scores[j]! - mx));
        for (let e = 0; e < hd; e++) {
          let s = 0;
          for (let j = 0; j < n; j++) s += (scores[j]! / z) * v[j * D + head * hd + e]!;
          ctx[i * D + head * hd + e] = s;
        }
      }
    }
    const o = linear(ctx, n, D, w(`${p}self_attn.out_proj.weight`), D, w(`${p}self_attn.out_proj.bias`));
    const h1 = h.map((x, i) => x + o[i]!);
    const m = layerNorm(h1, n, D, w(`${p}layer_norm2.weight`), w(`${p}layer_norm2.bias`), c.eps);
    const f = linear(m, n, D, w(`${p}mlp.fc1.weight`), c.inter, w(`${p}mlp.fc1.bias`)).map((x) =>
      c.act === 'quick_gelu' ? x / (1 + Math.exp(-1.702 * x)) : 0.5 * x * (1 + erf(x / Math.SQRT2)),
    );
    const f2 = linear(f, n, c.inter, w(`${p}mlp.fc2.weight`), D, w(`${p}mlp.fc2.bias`));
    h = h1.map((x, i) => x + f2[i]!);
    hidden.push(h);
  }
  const pooler = layerNorm(h.subarray(0, D), 1, D, w('vision_model.post_layernorm.weight'), w('vision_model.post_layernorm.bias'), c.eps);
  const proj = weights.get('visual_projection.weight');
  const embeds = proj ? linear(pooler, 1, D, w('visual_projection.weight'), proj.shape[0]!) : undefined;
  return { lastHiddenState: h, poolerOutput: pooler, imageEmbeds: embeds, hiddenStates: hidden };
}
