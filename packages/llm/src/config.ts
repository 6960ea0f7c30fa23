/**
 * Decoder configuration: a Hugging Face `config.json` (snake_case, as transformers writes it) validated and
 * turned into the typed {@link DecoderConfig} every family reads.
 * @module
 */
import { ConfigValidationError, validateWithSchema, type JSONSchema } from '@multimeditron/core';

/** RoPE scaling parameters (`rope_scaling` in config.json); `null` means the default rope. */
export interface RopeScaling {
  /** `default`, `linear` or `llama3` (read from `rope_type`, or the legacy `type` key). */
  ropeType: 'default' | 'linear' | 'llama3';
  factor: number;
  /** llama3 only. */
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/** The typed decoder configuration shared by every family. */
export interface DecoderConfig {
  /** `model_type` of config.json (the registry name). */
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  /** `num_key_value_heads`, default `num_attention_heads` (MHA); 1 is MQA, in between GQA. */
  numKeyValueHeads: number;
  /** `head_dim`, default `hidden_size / num_attention_heads`. */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** `partial_rotary_factor` x head_dim, rounded down to an even number (default: all of head_dim). */
  rotaryDim: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  attentionBias: boolean;
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  /** `hidden_act`: `silu` (SwiGLU) is what Llama and Qwen3 use; `gelu`/`gelu_pytorch_tanh` also accepted. */
  hiddenAct: 'silu' | 'gelu' | 'gelu_pytorch_tanh';
  /** Per-head RMSNorm of q and k before rope (Qwen3). Set by the family, not by config.json. */
  qkNorm: boolean;
  bosTokenId: number | undefined;
  /** `eos_token_id` as a list. */
  eosTokenIds: number[];
  padTokenId: number | undefined;
  /** The config.json content as read (unknown keys kept, written back by savePretrained). */
  raw: Record<string, unknown>;
}

/** Sane upper bounds: a config beyond them is refused before any allocation. */
export const DECODER_LIMITS = Object.freeze({
  vocabSize: 4_194_304,
  hiddenSize: 65_536,
  intermediateSize: 262_144,
  numHiddenLayers: 1_024,
  numAttentionHeads: 1_024,
  headDim: 1_024,
  maxPositionEmbeddings: 16_777_216,
});

const int = (max: number): JSONSchema => ({ type: 'integer', minimum: 1, maximum: max });
const tokenIds: JSONSchema = {
  oneOf: [{ type: 'integer', minimum: 0 }, { type: 'array', items: { type: 'integer', minimum: 0 } }, { type: 'null' }],
};

/** JSON Schema of the config.json keys a decoder reads (other keys are kept as they are). */
export const DECODER_CONFIG_SCHEMA: JSONSchema = Object.freeze({
  type: 'object',
  properties: {
    model_type: { type: 'string', minLength: 1 },
    vocab_size: int(DECODER_LIMITS.vocabSize),
    hidden_size: int(DECODER_LIMITS.hiddenSize),
    intermediate_size: int(DECODER_LIMITS.intermediateSize),
    num_hidden_layers: int(DECODER_LIMITS.numHiddenLayers),
    num_attention_heads: int(DECODER_LIMITS.numAttentionHeads),
    num_key_value_heads: { oneOf: [int(DECODER_LIMITS.numAttentionHeads), { type: 'null' }] },
    head_dim: { oneOf: [int(DECODER_LIMITS.headDim), { type: 'null' }] },
    rms_norm_eps: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
    rope_theta: { type: 'number', exclusiveMinimum: 0 },
    partial_rotary_factor: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
    rope_scaling: {
      oneOf: [
        { type: 'null' },
        {
          type: 'object',
          properties: {
            rope_type: { type: 'string' },
            type: { type: 'string' },
            factor: { type: 'number', exclusiveMinimum: 0 },
            low_freq_factor: { type: 'number', exclusiveMinimum: 0 },
            high_freq_factor: { type: 'number', exclusiveMinimum: 0 },
            original_max_position_embeddings: { type: 'integer', minimum: 1 },
          },
        },
      ],
    },
    max_position_embeddings: int(DECODER_LIMITS.maxPositionEmbeddings),
    attention_bias: { type: 'boolean' },
    mlp_bias: { type: 'boolean' },
    tie_word_embeddings: { type: 'boolean' },
    hidden_act: { enum: ['silu', 'gelu', 'gelu_pytorch_tanh'] },
    bos_token_id: tokenIds,
    eos_token_id: tokenIds,
    pad_token_id: tokenIds,
  },
  required: ['model_type', 'vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'],
});

function firstId(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (Array.isArray(v) && typeof v[0] === 'number') return v[0];
  return undefined;
}

/** Family-specific defaults applied before the config is read (e.g. Qwen3's rope_theta). */
export interface DecoderConfigDefaults {
  ropeTheta?: number;
  rmsNormEps?: number;
  tieWordEmbeddings?: boolean;
  qkNorm?: boolean;
}

/**
 * Validates a config.json object and builds the {@link DecoderConfig}. Throws {@link ConfigValidationError}
 * naming `source` (the file) and the offending key.
 */
export function parseDecoderConfig(raw: unknown, source: string, defaults: DecoderConfigDefaults = {}): DecoderConfig {
  const json = validateWithSchema<Record<string, unknown>>(DECODER_CONFIG_SCHEMA, structuredClone(raw), source);
  const n = (k: string) => json[k] as number;
  const heads = n('num_attention_heads');
  const kvHeads = (json['num_key_value_heads'] as number | null | undefined) ?? heads;
  const hidden = n('hidden_size');
  const issues: Array<{ path: string; rule: string; message: string }> = [];
  if (heads % kvHeads !== 0) {
    issues.push({ path: '/num_key_value_heads', rule: 'divides', message: `${kvHeads} does not divide num_attention_heads ${heads}` });
  }
  const headDimRaw = json['head_dim'] as number | null | undefined;
  if (headDimRaw == null && hidden % heads !== 0) {
    issues.push({ path: '/head_dim', rule: 'required', message: `absent, and hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}` });
  }
  const headDim = headDimRaw ?? Math.floor(hidden / heads);
  if (headDim % 2 !== 0) issues.push({ path: '/head_dim', rule: 'even', message: `rope needs an even head_dim, got ${headDim}` });
  let ropeScaling: RopeScaling | null = null;
  const rs = json['rope_scaling'] as Record<string, unknown> | null | undefined;
  if (rs) {
    const type = (rs['rope_type'] ?? rs['type'] ?? 'default') as string;
    if (type !== 'default' && type !== 'linear' && type !== 'llama3') {
      issues.push({ path: '/rope_scaling/rope_type', rule: 'enum', message: `rope type "${type}" is not supported (default, linear, llama3)` });
    } else {
      const factor = (rs['factor'] as number | undefined) ?? 1;
      if (type === 'llama3') {
        for (const k of ['factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings']) {
          if (rs[k] === undefined) issues.push({ path: `/rope_scaling/${k}`, rule: 'required', message: 'the llama3 rope needs it' });
        }
      }
      ropeScaling = {
        ropeType: type,
        factor,
        lowFreqFactor: (rs['low_freq_factor'] as number | undefined) ?? 1,
        highFreqFactor: (rs['high_freq_factor'] as number | undefined) ?? 4,
        originalMaxPositionEmbeddings: (rs['original_max_position_embeddings'] as number | undefined) ?? 8192,
      };
      if (type === 'default') ropeScaling = null;
    }
  }
  const partial = (json['partial_rotary_factor'] as number | undefined) ?? 1;
  const rotaryDim = Math.floor((headDim * partial) / 2) * 2;
  if (rotaryDim < 2) issues.push({ path: '/partial_rotary_factor', rule: 'minimum', message: 'leaves fewer than 2 rotary dimensions' });
  if (issues.length) throw new ConfigValidationError(source, issues);
  const eos = json['eos_token_id'];
  return {
    modelType: json['model_type'] as string,
    vocabSize: n('vocab_size'),
    hiddenSize: hidden,
    intermediateSize: n('intermediate_size'),
    numHiddenLayers: n('num_hidden_layers'),
    numAttentionHeads: heads,
    numKeyValueHeads: kvHeads,
    headDim,
    rmsNormEps: (json['rms_norm_eps'] as number | undefined) ?? defaults.rmsNormEps ?? 1e-6,
    ropeTheta: (json['rope_theta'] as number | undefined) ?? defaults.ropeTheta ?? 10000,
    rotaryDim,
    ropeScaling,
    maxPositionEmbeddings: (json['max_position_embeddings'] as number | undefined) ?? 2048,
    attentionBias: (json['attention_bias'] as boolean | undefined) ?? false,
    mlpBias: (json['mlp_bias'] as boolean | undefined) ?? false,
    tieWordEmbeddings: (json['tie_word_embeddings'] as boolean | undefined) ?? defaults.tieWordEmbeddings ?? false,
    hiddenAct: (json['hidden_act'] as DecoderConfig['hiddenAct'] | undefined) ?? 'silu',
    qkNorm: defaults.qkNorm ?? false,
    bosTokenId: firstId(json['bos_token_id']),
    eosTokenIds: typeof eos === 'number' ? [eos] : Array.isArray(eos) ? (eos as number[]) : [],
    padTokenId: firstId(json['pad_token_id']),
    raw: json,
  };
}
