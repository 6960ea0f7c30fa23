/**
 * The training config: the original MultiMeditron YAML, read as it is.
 *
 * Top level: `base_llm`, `base_model`, `attachment_token`, `tokenizer_type`, `token_size`, `truncation`,
 * `max_sequence_length`, `loaders`, `modalities`, `training_mode`, `datasets`, `resume_from_checkpoint`, `seed`,
 * `training_args` (the Hugging Face TrainingArguments that matter on one CPU process). Keys that only make sense
 * in PyTorch (deepspeed, bf16, gradient_checkpointing, report_to, dataloader_*, ...) are accepted and listed in
 * one warning as ignored; any other unknown key, or a wrong type, is a {@link ConfigValidationError} naming its
 * path in the YAML (`/training_args/learning_rate`). `$VAR` and `${VAR}` in strings expand from the environment,
 * as the original's cookbook YAMLs expect (`$STORAGE_ROOT/...`); relative paths resolve against the YAML's folder.
 * @module
 */
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigValidationError, DEFAULT_ATTACHMENT_TOKEN, InputError, validateWithSchema, type ConfigIssue, type JSONSchema, type LoaderSpec } from '@multimeditron/core';
import { parseTrainingMode, type TrainingMode } from './modes.js';
import { SCHEDULER_TYPES, type SchedulerType } from './schedule.js';

/** The Hugging Face TrainingArguments we implement (snake_case as in the YAML). */
export interface TrainingArgs {
  output_dir: string;
  learning_rate: number;
  per_device_train_batch_size: number;
  gradient_accumulation_steps: number;
  num_train_epochs: number;
  /** > 0 overrides num_train_epochs. */
  max_steps: number;
  lr_scheduler_type: SchedulerType;
  lr_scheduler_kwargs: Record<string, number>;
  warmup_steps: number;
  warmup_ratio: number;
  weight_decay: number;
  /** 0 or null: no clipping. */
  max_grad_norm: number | null;
  optim: 'adamw_torch' | 'adamw_torch_fused' | 'adamw_hf' | 'sgd';
  adam_beta1: number;
  adam_beta2: number;
  adam_epsilon: number;
  save_strategy: 'no' | 'steps' | 'epoch';
  /** An integer, or a fraction (< 1) of the total steps. */
  save_steps: number;
  save_total_limit: number | null;
  logging_strategy: 'no' | 'steps' | 'epoch';
  /** An integer, or a fraction (< 1) of the total steps. */
  logging_steps: number;
  logging_first_step: boolean;
  seed: number;
  /** Drop the last, incomplete micro-batch of each epoch. */
  dataloader_drop_last: boolean;
}

/** A dataset entry. */
export interface DatasetEntry {
  /** JSONL or Parquet file, a folder of them, or a Hugging Face `save_to_disk` folder. */
  packed_path: string;
}

/** The parsed, validated training config. */
export interface TrainConfig {
  /** The LLM whose tokenizer is used and whose weights start a fresh model (folder or hub id). */
  base_llm: string;
  /** A MultiMeditron checkpoint to start from, or null for a fresh model. */
  base_model: string | null;
  attachment_token: string;
  tokenizer_type: 'llama' | 'apertus' | 'qwen3' | null;
  /** The LLM's hidden size (checked against base_llm). */
  token_size: number | null;
  truncation: boolean;
  max_sequence_length: number | null;
  loaders: LoaderSpec[];
  /** Modality configs (snake_case, as in a MultiMeditron config.json). */
  modalities: Array<Record<string, unknown>>;
  training_mode: TrainingMode;
  datasets: DatasetEntry[];
  /** false/null: start fresh; true: the last checkpoint of output_dir; a string: that checkpoint folder. */
  resume_from_checkpoint: boolean | string | null;
  seed: number;
  training_args: TrainingArgs;
  /** The file the config came from (or `<config>`). */
  source: string;
  /** The folder relative paths resolve against. */
  baseDir: string;
  /** Keys that were accepted and ignored (PyTorch-only). */
  ignored: string[];
}

/** TrainingArguments keys that only make sense in PyTorch / on GPUs: accepted, warned about, ignored. */
export const IGNORED_TRAINING_ARGS: readonly (string | RegExp)[] = [
  'deepspeed', 'bf16', 'fp16', 'tf32', 'bf16_full_eval', 'fp16_full_eval', 'fp16_opt_level', 'half_precision_backend',
  'gradient_checkpointing', 'gradient_checkpointing_kwargs', 'report_to', 'run_name', 'logging_dir', /^dataloader_(?!drop_last$)/,
  'remove_unused_columns', /^ddp_/, 'accelerator_config', 'local_rank', 'torch_compile', 'torch_compile_backend',
  'torch_compile_mode', 'fsdp', 'fsdp_config', 'use_cpu', 'no_cuda', 'push_to_hub', /^hub_/, 'disable_tqdm',
  'overwrite_output_dir', 'optim_target_modules', 'label_names', 'include_num_input_tokens_seen', 'save_safetensors',
  'skip_memory_metrics', 'use_liger_kernel', 'neftune_noise_alpha', 'group_by_length', 'length_column_name',
  'do_train', 'do_eval', 'do_predict', 'eval_strategy', 'evaluation_strategy', 'eval_steps', 'per_device_eval_batch_size',
];
/** Top-level keys of the original that do not apply here. */
export const IGNORED_TOP_LEVEL: readonly string[] = ['wandb_run_id', 'wandb_project'];

const num = { type: 'number' };
const int = { type: 'integer' };
const TRAINING_ARGS_SCHEMA: JSONSchema = {
  type: 'object',
  required: ['output_dir'],
  additionalProperties: false,
  properties: {
    output_dir: { type: 'string', minLength: 1 },
    learning_rate: { ...num, minimum: 0, default: 5e-5 },
    per_device_train_batch_size: { ...int, minimum: 1, maximum: 65536, default: 8 },
    gradient_accumulation_steps: { ...int, minimum: 1, maximum: 65536, default: 1 },
    num_train_epochs: { ...num, exclusiveMinimum: 0, maximum: 1e6, default: 3 },
    max_steps: { ...int, minimum: -1, default: -1 },
    lr_scheduler_type: { enum: [...SCHEDULER_TYPES], default: 'linear' },
    lr_scheduler_kwargs: { type: 'object', additionalProperties: num, default: {} },
    warmup_steps: { ...int, minimum: 0, default: 0 },
    warmup_ratio: { ...num, minimum: 0, maximum: 1, default: 0 },
    weight_decay: { ...num, minimum: 0, default: 0 },
    max_grad_norm: { type: ['number', 'null'], minimum: 0, default: 1 },
    optim: { enum: ['adamw_torch', 'adamw_torch_fused', 'adamw_hf', 'sgd'], default: 'adamw_torch' },
    adam_beta1: { ...num, minimum: 0, exclusiveMaximum: 1, default: 0.9 },
    adam_beta2: { ...num, minimum: 0, exclusiveMaximum: 1, default: 0.999 },
    adam_epsilon: { ...num, exclusiveMinimum: 0, default: 1e-8 },
    save_strategy: { enum: ['no', 'steps', 'epoch'], default: 'steps' },
    save_steps: { ...num, exclusiveMinimum: 0, default: 500 },
    save_total_limit: { type: ['integer', 'null'], minimum: 1, default: null },
    logging_strategy: { enum: ['no', 'steps', 'epoch'], default: 'steps' },
    logging_steps: { ...num, exclusiveMinimum: 0, default: 500 },
    logging_first_step: { type: 'boolean', default: false },
    seed: { ...int, minimum: 0 },
    dataloader_drop_last: { type: 'boolean', default: false },
  },
};

const SCHEMA: JSONSchema = {
  type: 'object',
  required: ['base_llm', 'training_mode', 'datasets', 'training_args'],
  additionalProperties: false,
  properties: {
    base_llm: { type: 'string', minLength: 1 },
    base_model: { type: ['string', 'null'], default: null },
    attachment_token: { type: 'string', minLength: 1, default: DEFAULT_ATTACHMENT_TOKEN },
    tokenizer_type: { enum: ['llama', 'apertus', 'qwen3', null], default: null },
    token_size: { type: ['integer', 'null'], minimum: 1, default: null },
    truncation: { type: 'boolean', default: false },
    max_sequence_length: { type: ['integer', 'null'], minimum: 2, default: null },
    loaders: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        required: ['loader_type', 'modality_type'],
        properties: { loader_type: { type: 'string', minLength: 1 }, modality_type: { type: 'string', minLength: 1 } },
      },
    },
    modalities: {
      default: [],
      oneOf: [
        { type: 'array', items: { type: 'object', required: ['model_type'], properties: { model_type: { type: 'string', minLength: 1 } } } },
        { type: 'object', required: ['config'], additionalProperties: false, properties: { config: { type: 'object' } } },
      ],
    },
    training_mode: { type: 'string' },
    datasets: {
      type: 'array',
      minItems: 1,
      items: { type: 'object', required: ['packed_path'], additionalProperties: false, properties: { packed_path: { type: 'string', minLength: 1 } } },
    },
    resume_from_checkpoint: { type: ['boolean', 'string', 'null'], default: false },
    seed: { ...int, minimum: 0 },
    training_args: { type: 'object' },
  },
};

const isIgnoredArg = (k: string) => IGNORED_TRAINING_ARGS.some((p) => (typeof p === 'string' ? p === k : p.test(k)));

/** Expands `$VAR` / `${VAR}` in every string; an unset variable is an issue at its path. */
function expandEnv(value: unknown, env: NodeJS.ProcessEnv, at: string, issues: ConfigIssue[]): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, a: string | undefined, b: string | undefined) => {
      const name = (a ?? b)!;
      const v = env[name];
      if (v === undefined) {
        issues.push({ path: at, rule: 'env', message: `uses $${name}, which is not set in the environment` });
        return m;
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, env, `${at}/${i}`, issues));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expandEnv(v, env, `${at}/${k}`, issues)]));
  }
  return value;
}

const camel = (k: string) => k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** Options of {@link parseTrainConfig}. */
export interface ParseTrainConfigOptions {
  /** Name of the source, for errors (a file path). */
  source?: string;
  /** Folder that relative paths resolve against (default: the source's folder, else the current one). */
  baseDir?: string;
  /** Environment for `$VAR` expansion (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** Receives the one warning listing the ignored keys. */
  warn?: (message: string) => void;
}

/**
 * Validates a training config given as an object (the YAML's content) and applies the Hugging Face defaults.
 * Throws {@link ConfigValidationError} with every issue, each naming its path.
 */
export function parseTrainConfig(raw: unknown, options: ParseTrainConfigOptions = {}): TrainConfig {
  const source = options.source ?? '<config>';
  const baseDir = path.resolve(options.baseDir ?? (options.source ? path.dirname(options.source) : '.'));
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigValidationError(source, [{ path: '/', rule: 'type', message: 'must be a mapping (key: value)' }]);
  const issues: ConfigIssue[] = [];
  const data = expandEnv(structuredClone(raw), options.env ?? process.env, '', issues) as Record<string, unknown>;
  if (issues.length) throw new ConfigValidationError(source, issues);
  const ignored: string[] = [];
  for (const k of IGNORED_TOP_LEVEL) {
    if (k in data) {
      ignored.push(k);
      delete data[k];
    }
  }
  const args = data['training_args'];
  if (args && typeof args === 'object' && !Array.isArray(args)) {
    for (const k of Object.keys(args)) {
      if (isIgnoredArg(k)) {
        ignored.push(`training_args.${k}`);
        delete (args as Record<string, unknown>)[k];
      }
    }
  }
  const top = validateWithSchema<Record<string, unknown>>(SCHEMA, data, source);
  const ta = validateArgs(top['training_args'], source);
  const mode = parseTrainingMode(top['training_mode'], source);
  // modalities: a list of configs, or the older `{config: {...}}` form of the original's docs
  const mods = top['modalities'];
  const modalities = (Array.isArray(mods) ? mods : [(mods as { config: Record<string, unknown> }).config]) as Array<Record<string, unknown>>;
  if (!Array.isArray(mods) && typeof modalities[0]?.['model_type'] !== 'string') {
    throw new ConfigValidationError(source, [{ path: '/modalities/config/model_type', rule: 'required', message: 'must name a registered modality' }]);
  }
  const loaders = (top['loaders'] as Array<Record<string, unknown>>).map((l) => {
    const spec: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(l)) spec[camel(k)] = k === 'base_path' && typeof v === 'string' ? path.resolve(baseDir, v) : v;
    return spec as LoaderSpec;
  });
  if (top['truncation'] && top['max_sequence_length'] == null) {
    throw new ConfigValidationError(source, [{ path: '/max_sequence_length', rule: 'required', message: 'truncation: true needs max_sequence_length' }]);
  }
  const seed = (top['seed'] as number | undefined) ?? ta.seed ?? 42;
  const training_args: TrainingArgs = { ...ta, seed: ta.seed ?? seed, output_dir: path.resolve(baseDir, ta.output_dir) };
  if (training_args.max_steps <= 0 && !Number.isFinite(training_args.num_train_epochs)) {
    throw new ConfigValidationError(source, [{ path: '/training_args/num_train_epochs', rule: 'type', message: 'must be finite when max_steps is not set' }]);
  }
  const resume = top['resume_from_checkpoint'] as boolean | string | null;
  // a model path that exists beside the YAML is a folder; anything else is left to the resolver (hub id)
  const local = (v: string | null) => (v && !path.isAbsolute(v) && existsSync(path.resolve(baseDir, v)) ? path.resolve(baseDir, v) : v);
  const config: TrainConfig = {
    base_llm: local(top['base_llm'] as string)!,
    base_model: local(top['base_model'] as string | null),
    attachment_token: top['attachment_token'] as string,
    tokenizer_type: top['tokenizer_type'] as TrainConfig['tokenizer_type'],
    token_size: top['token_size'] as number | null,
    truncation: top['truncation'] as boolean,
    max_sequence_length: top['max_sequence_length'] as number | null,
    loaders,
    modalities,
    training_mode: mode,
    datasets: (top['datasets'] as DatasetEntry[]).map((d) => ({ packed_path: path.resolve(baseDir, d.packed_path) })),
    resume_from_checkpoint: typeof resume === 'string' ? path.resolve(baseDir, resume) : resume,
    seed,
    training_args,
    source,
    baseDir,
    ignored,
  };
  if (ignored.length) (options.warn ?? ((m: string) => process.emitWarning(m)))(`${source}: ignored (PyTorch-only, no effect here): ${ignored.join(', ')}`);
  return config;
}

function validateArgs(raw: unknown, source: string): Omit<TrainingArgs, 'seed'> & { seed?: number } {
  try {
    return validateWithSchema(TRAINING_ARGS_SCHEMA, raw, source);
  } catch (e) {
    if (e instanceof ConfigValidationError) {
      throw new ConfigValidationError(source, e.issues.map((i) => ({ ...i, path: `/training_args${i.path === '/' ? '' : i.path}` })), { cause: e });
    }
    throw e;
  }
}

/** Reads and validates a YAML training config file. YAML syntax errors name the line and column. */
export async function readTrainConfig(file: string, options: Omit<ParseTrainConfigOptions, 'source'> = {}): Promise<TrainConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new InputError(file, `cannot read the training config: ${(e as Error).message}`, { cause: e });
  }
  if (text.length > 4 * 1024 * 1024) throw new InputError(file, `is ${text.length} bytes; a training config is at most 4 MiB`);
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length) {
    throw new ConfigValidationError(file, doc.errors.map((e) => ({
      path: e.linePos?.[0] ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '/',
      rule: 'yaml',
      message: e.message.split('\n')[0]!,
    })));
  }
  // maxAliasCount bounds alias expansion (a "billion laughs" document)
  return parseTrainConfig(doc.toJS({ maxAliasCount: 100 }), { ...options, source: path.resolve(file) });
}
