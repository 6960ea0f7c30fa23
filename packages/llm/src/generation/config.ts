/**
 * Generation options: what a call may set, their defaults from `generation_config.json`, and validation.
 * @module
 */
import { ConfigValidationError, validateWithSchema, type JSONSchema } from '@multimeditron/core';
import type { GenerationConfigJSON } from '../decoder.js';

/** Options of one generation call (each overrides the model's generation_config.json). */
export interface GenerationOptions {
  /** Sample (true) or pick the most likely token (false, greedy). generation_config `do_sample`, else false. */
  doSample?: boolean;
  /** Softmax temperature (> 0). Default generation_config `temperature`, else 1. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). Default generation_config `top_k`, else 50 (as transformers). */
  topK?: number;
  /** Nucleus sampling: keep the smallest set of tokens whose probability reaches p (1 = off). Default `top_p`, else 1. */
  topP?: number;
  /** Drop tokens less likely than minP x the top token's probability (0 = off). Default `min_p`, else off. */
  minP?: number;
  /** > 1 discourages tokens already in the prompt or the output (transformers' rule). Default `repetition_penalty`, else 1. */
  repetitionPenalty?: number;
  /** Most new tokens. Default `max_new_tokens`, else `max_length` minus the prompt, else 256. */
  maxNewTokens?: number;
  /** Token ids that end a row. Default generation_config `eos_token_id`, else config.json's. */
  eosTokenIds?: number[];
  /** Strings that end a row; the text stops before the stop string (its tokens stay in `ids`). */
  stopStrings?: string[];
  /** Seed of the sampler (each row draws from its own stream: seed + row). Default: random. */
  seed?: number;
  /** Id fed to rows that finished while others go on. Default generation_config `pad_token_id`, else the first eos id. */
  padTokenId?: number;
}

/** Options with every default applied. */
export interface ResolvedGenerationOptions {
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
  maxNewTokens: number;
  eosTokenIds: number[];
  stopStrings: string[];
  seed: number;
  padTokenId: number;
}

/** Default of `maxNewTokens` when generation_config.json sets neither max_new_tokens nor max_length. */
export const DEFAULT_MAX_NEW_TOKENS = 256;

const SCHEMA: JSONSchema = {
  type: 'object',
  properties: {
    doSample: { type: 'boolean' },
    temperature: { type: 'number', exclusiveMinimum: 0 },
    topK: { type: 'integer', minimum: 0 },
    topP: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
    minP: { type: 'number', minimum: 0, maximum: 1 },
    repetitionPenalty: { type: 'number', exclusiveMinimum: 0 },
    maxNewTokens: { type: 'integer', minimum: 1 },
    eosTokenIds: { type: 'array', items: { type: 'integer', minimum: 0 } },
    stopStrings: { type: 'array', items: { type: 'string', minLength: 1 } },
    seed: { type: 'integer' },
    padTokenId: { type: 'integer', minimum: 0 },
  },
  additionalProperties: false,
};

const ids = (v: unknown): number[] | undefined =>
  typeof v === 'number' ? [v] : Array.isArray(v) && v.every((x) => typeof x === 'number') ? (v as number[]) : undefined;
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * Merges call options over generation_config.json (over the library defaults) and validates the result.
 * Throws {@link ConfigValidationError} naming the option.
 */
export function resolveGenerationOptions(
  options: GenerationOptions,
  generationConfig: GenerationConfigJSON,
  fallback: { eosTokenIds: number[]; promptLength: number; padTokenId?: number },
): ResolvedGenerationOptions {
  const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as GenerationOptions;
  validateWithSchema(SCHEMA, { ...defined }, 'generation options');
  const g = generationConfig;
  const maxLength = num(g['max_length']);
  const maxNew = defined.maxNewTokens ?? num(g['max_new_tokens'])
    ?? (maxLength !== undefined ? Math.max(1, maxLength - fallback.promptLength) : DEFAULT_MAX_NEW_TOKENS);
  const eos = defined.eosTokenIds ?? ids(g['eos_token_id']) ?? fallback.eosTokenIds;
  const r: ResolvedGenerationOptions = {
    doSample: defined.doSample ?? (typeof g['do_sample'] === 'boolean' ? (g['do_sample'] as boolean) : false),
    temperature: defined.temperature ?? num(g['temperature']) ?? 1,
    topK: defined.topK ?? num(g['top_k']) ?? 50,
    topP: defined.topP ?? num(g['top_p']) ?? 1,
    minP: defined.minP ?? num(g['min_p']) ?? 0,
    repetitionPenalty: defined.repetitionPenalty ?? num(g['repetition_penalty']) ?? 1,
    maxNewTokens: maxNew,
    eosTokenIds: eos,
    stopStrings: defined.stopStrings ?? [],
    seed: defined.seed ?? Math.floor(Math.random() * 2 ** 31),
    padTokenId: defined.padTokenId ?? ids(g['pad_token_id'])?.[0] ?? fallback.padTokenId ?? eos[0] ?? 0,
  };
  if (!(r.temperature > 0)) {
    throw new ConfigValidationError('generation options', [{ path: '/temperature', rule: 'exclusiveMinimum', message: 'must be > 0 (use doSample: false for greedy)' }]);
  }
  return r;
}
