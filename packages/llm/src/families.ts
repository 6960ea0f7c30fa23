/**
 * The built-in decoder families. Both are the shared {@link DecoderForCausalLM} block with switches.
 * @module
 */
import type { DecoderConfigDefaults } from './config.js';
import { DecoderForCausalLM } from './decoder.js';
import { RegisterLanguageModel } from './registry.js';

/**
 * Llama (`model_type` "llama": Llama 2/3/3.1/3.2, SmolLM, TinyLlama, ...): MHA/GQA/MQA, explicit `head_dim` or
 * hidden/heads, default, linear or llama3 rope (`rope_scaling.rope_type` or the legacy `type`), tied or untied
 * LM head, `attention_bias`, `mlp_bias`.
 */
@RegisterLanguageModel('llama', { architectures: ['LlamaForCausalLM'] })
export class LlamaForCausalLM extends DecoderForCausalLM {
  static override readonly configDefaults: DecoderConfigDefaults = { ropeTheta: 10000, rmsNormEps: 1e-6 };
}

/**
 * Qwen3 (`model_type` "qwen3"): Llama's block plus a per-head RMSNorm of q and k over head_dim (weights
 * `self_attn.q_norm.weight` / `k_norm.weight`), applied before rope.
 */
@RegisterLanguageModel('qwen3', { architectures: ['Qwen3ForCausalLM'] })
export class Qwen3ForCausalLM extends DecoderForCausalLM {
  static override readonly configDefaults: DecoderConfigDefaults = { ropeTheta: 10000, rmsNormEps: 1e-6, qkNorm: true };
}
