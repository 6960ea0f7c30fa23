/**
 * Logits processing and token selection, with the semantics of Hugging Face `transformers`
 * (`generation/logits_process.py`): repetition penalty, then (when sampling) temperature, top-k, top-p and
 * min-p, each acting on the scores left by the previous one; then argmax or a draw from the softmax.
 * Runs on the host, on one row of logits.
 * @module
 */
import type { ResolvedGenerationOptions } from './config.js';
import type { SeededRandom } from './rng.js';

/**
 * transformers' `RepetitionPenaltyLogitsProcessor`: for every token already in `previous` (prompt and
 * output), a negative score is multiplied by the penalty, a positive one divided by it. In place.
 */
export function applyRepetitionPenalty(scores: Float32Array, previous: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  const seen = new Set<number>();
  for (const id of previous) {
    if (seen.has(id) || id < 0 || id >= scores.length) continue;
    seen.add(id);
    const s = scores[id]!;
    scores[id] = s < 0 ? s * penalty : s / penalty;
  }
}

/** Index of the largest score (the first one on ties, as torch.argmax). */
export function argmax(scores: ArrayLike<number>): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < scores.length; i++) {
    const v = scores[i]!;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

/** The k-th largest value of `scores` (k >= 1), by a bounded min-heap. */
function kthLargest(scores: Float32Array, k: number): number {
  const heap = new Float64Array(k);
  let n = 0;
  const siftDown = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && heap[l]! < heap[m]!) m = l;
      if (r < n && heap[r]! < heap[m]!) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  for (let i = 0; i < scores.length; i++) {
    const v = scores[i]!;
    if (n < k) {
      let j = n++;
      heap[j] = v;
      while (j > 0) {
        const p = (j - 1) >> 1;
        if (heap[p]! <= heap[j]!) break;
        [heap[p], heap[j]] = [heap[j]!, heap[p]!];
        j = p;
      }
    } else if (v > heap[0]!) {
      heap[0] = v;
      siftDown(0);
    }
  }
  return heap[0]!;
}

/**
 * The candidate tokens and their probabilities after temperature, top-k, top-p and min-p (in that order),
 * sorted by decreasing probability. Probabilities are renormalised over the candidates.
 */
export function samplingDistribution(
  logits: Float32Array,
  o: Pick<ResolvedGenerationOptions, 'temperature' | 'topK' | 'topP' | 'minP'>,
): { ids: Int32Array; probs: Float64Array } {
  const V = logits.length;
  const t = o.temperature;
  // top-k keeps every token whose (tempered) score is >= the k-th largest: ties at the boundary stay, as in transformers
  let threshold = -Infinity;
  if (o.topK > 0 && o.topK < V) threshold = kthLargest(logits, o.topK);
  const cand: number[] = [];
  for (let i = 0; i < V; i++) if (logits[i]! >= threshold && logits[i]! > -Infinity) cand.push(i);
  cand.sort((a, b) => logits[b]! - logits[a]! || a - b);
  let probs = softmaxOf(cand.map((i) => logits[i]! / t));
  let keep = cand.length;
  if (o.topP < 1) {
    // transformers removes a token when the cumulative probability of the tokens at or below it is <= 1 - top_p,
    // i.e. keeps a token while the probability mass above it is < top_p (the top token always stays)
    let above = 0;
    let j = 0;
    for (; j < keep; j++) {
      if (j > 0 && above >= o.topP) break;
      above += probs[j]!;
    }
    keep = Math.max(1, j);
    probs = renormalise(probs, keep);
  }
  if (o.minP > 0) {
    const limit = o.minP * probs[0]!;
    let j = 1;
    while (j < keep && probs[j]! >= limit) j++;
    keep = j;
    probs = renormalise(probs, keep);
  }
  return { ids: Int32Array.from(cand.slice(0, keep)), probs: probs.subarray(0, keep) };
}

function softmaxOf(x: number[]): Float64Array {
  const out = new Float64Array(x.length);
  let m = -Infinity;
  for (const v of x) if (v > m) m = v;
  let sum = 0;
  x.forEach((v, i) => {
    out[i] = Math.exp(v - m);
    sum += out[i]!;
  });
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

function renormalise(p: Float64Array, keep: number): Float64Array {
  let sum = 0;
  for (let i = 0; i < keep; i++) sum += p[i]!;
  const out = new Float64Array(keep);
  for (let i = 0; i < keep; i++) out[i] = p[i]! / sum;
  return out;
}

/** Picks the next token of one row: argmax when not sampling, else a draw from {@link samplingDistribution}. */
export function selectToken(
  logits: Float32Array,
  previous: Iterable<number>,
  o: ResolvedGenerationOptions,
  rng: SeededRandom,
): number {
  const scores = o.repetitionPenalty === 1 ? logits : Float32Array.from(logits);
  applyRepetitionPenalty(scores, previous, o.repetitionPenalty);
  if (!o.doSample) return argmax(scores);
  const { ids, probs } = samplingDistribution(scores, o);
  const u = rng.next();
  let acc = 0;
  for (let i = 0; i < ids.length; i++) {
    acc += probs[i]!;
    if (u < acc) return ids[i]!;
  }
  return ids[ids.length - 1]!;
}
