// A random-weight Llama decoder of a given shape (bench/llm.mjs, bench/train.mjs) and deterministic token ids.
import * as tf from '@tensorflow/tfjs-core';
import { LlamaForCausalLM, parseDecoderConfig } from '@multimeditron/llm';

class RandomLlama extends LlamaForCausalLM {
  randomise(seed) {
    for (const s of this.parameterSpecs()) {
      // linear weights are stored transposed ([in, out]); the values are i.i.d., so drawing them in that shape is the same
      const shape = s.kind === 'linear' ? [s.shape[1], s.shape[0]] : s.shape;
      const init = s.key.endsWith('norm.weight') ? tf.ones(shape) : tf.randomNormal(shape, 0, 0.02, 'float32', seed++);
      this.params.set(s.key, tf.variable(init, false));
      init.dispose();
    }
    this.bindWeights();
  }
}

/** A random Llama of shape `s` ({vocab, hidden, inter, layers, heads, kv, theta}), tied head. */
export function buildRandomLlama(s) {
  const config = parseDecoderConfig({
    model_type: 'llama', vocab_size: s.vocab, hidden_size: s.hidden, intermediate_size: s.inter, num_hidden_layers: s.layers,
    num_attention_heads: s.heads, num_key_value_heads: s.kv, rms_norm_eps: 1e-5, rope_theta: s.theta,
    max_position_embeddings: 8192, tie_word_embeddings: true, hidden_act: 'silu',
  }, '<bench>');
  const m = new RandomLlama(config);
  m.randomise(1);
  return m;
}

/** Deterministic pseudo-random token ids. */
export const makeIds = (n, vocab, seed) => Array.from({ length: n }, (_, i) => (seed * 7919 + i * 104729 + ((i * i) % 997)) % vocab);
