/**
 * The run config of an embedding run: which plugins, modalities, loaders and tokenizer to use, and the batch
 * settings. It is a JSON file validated with ajv ({@link RUN_CONFIG_SCHEMA}); relative paths in it resolve
 * against the config file's folder.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { readJsonFile, validateWithSchema, type JSONSchema, type ModalityConfigJSON } from '../config.js';
import { DEFAULT_ATTACHMENT_TOKEN } from '../constants.js';
import { ConfigValidationError, MultimeditronError, type ConfigIssue } from '../errors.js';
import type { Multimeditron } from '../multimeditron.js';
import { MODALITY_TOKENS_SCHEMA, type CollatorOptions } from '../data/collator.js';
import type { LoaderSpec } from '../data/loading.js';

/**
 * One loader of the run (as in the original's config): which loader reads which dataset `type`, with its
 * options. A type without an entry gets `fs-<type>` for path values and `raw-<type>` for bytes.
 */
export type RunLoaderSpec = LoaderSpec;

/** The tokenizer of the run. Give either `path` (a folder) or `tokenizerJson` (and optionally `tokenizerConfig`). */
export interface RunTokenizerSpec {
  /** A folder holding `tokenizer.json` and (optionally) `tokenizer_config.json`. */
  path?: string;
  /** Path of a Hugging Face `tokenizer.json`. */
  tokenizerJson?: string;
  /** Path of its `tokenizer_config.json` (chat template, special tokens). */
  tokenizerConfig?: string;
  /** The placeholder token, one per modality in the text. Default `<|reserved_special_token_0|>`. */
  attachmentToken: string;
  /** Text inserted before every modality's slots (see {@link CollatorOptions}). */
  modalityStartToken?: string;
  /** Text inserted after every modality's slots. */
  modalityEndToken?: string;
  /** Per-type start/end tokens. */
  modalityTokens?: Record<string, { start?: string; end?: string }>;
  /** A chat template (Jinja source) replacing the tokenizer's. */
  chatTemplate?: string;
  /** Add the tokenizer's special tokens (e.g. `<|begin_of_text|>`) to pretraining text. Default true. */
  addSpecialTokens?: boolean;
}

/** How the dataset is read. */
export interface RunDatasetSpec {
  /** Let sample paths leave the dataset's folder. Default false. */
  allowOutsideBase: boolean;
}

/** Batch and output settings of the run. */
export interface RunBatchSpec {
  /** Samples per batch: one forward call per modality type per batch. Default 8. */
  batchSize: number;
  /** Dataset samples covered by one shard (successful ones are stored; failed ones go to errors.jsonl). Default 1000. */
  shardSize: number;
  /** Worker threads for loading and processing (0 = in the main thread). Default `min(2, cores)`. */
  workers?: number;
  /** Longest token sequence; longer samples are truncated without cutting a modality block. Default: none. */
  maxLength?: number;
}

/** The run config as written in the file (paths as written). */
export interface RunConfig {
  /** Optional JSON-Schema reference for editors; ignored. */
  $schema?: string;
  /** Free text; ignored. */
  description?: string;
  /**
   * Plugins to load: package names (resolved from the config's folder, the current directory, then the host) or
   * paths. When omitted, the host's plugins are used.
   */
  plugins?: string[];
  /** One modality config per modality type (each validated by its registered config class). */
  modalities: ModalityConfigJSON[];
  /** Loaders by modality type (at most one per type); optional. */
  loaders: RunLoaderSpec[];
  tokenizer: RunTokenizerSpec;
  batch: RunBatchSpec;
  dataset: RunDatasetSpec;
}

/** A loaded run config: the validated config with its paths resolved, and where it came from. */
export interface ResolvedRunConfig {
  /** The config as validated (defaults applied, paths as written): the run's identity is computed from it. */
  config: RunConfig;
  /** The file it was read from, if any. */
  file?: string;
  /** The folder relative paths resolved against. */
  baseDir: string;
  /** Plugin specifiers with paths made absolute (package names kept). */
  plugins?: string[];
  /** Modality configs with path-like strings (`./`, `../`) made absolute. */
  modalities: ModalityConfigJSON[];
  /** Loaders with `basePath` and path-like options made absolute. */
  loaders: RunLoaderSpec[];
  /** Absolute path of tokenizer.json. */
  tokenizerJson: string;
  /** Absolute path of tokenizer_config.json, when there is one. */
  tokenizerConfig?: string;
  /** Collator options from the tokenizer section and `batch.maxLength`. */
  collator: CollatorOptions;
  batch: RunBatchSpec;
  dataset: RunDatasetSpec;
}

/** JSON Schema of the run config file. */
export const RUN_CONFIG_SCHEMA: JSONSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: {
    $schema: { type: 'string' },
    description: { type: 'string' },
    plugins: { type: 'array', items: { type: 'string', minLength: 1 }, uniqueItems: true },
    modalities: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['modelType'],
        properties: {
          modelType: { type: 'string', minLength: 1 },
          modalityType: { type: 'string', minLength: 1 },
          hiddenSize: { type: 'integer', minimum: 1 },
          maxBatchSize: { type: 'integer', minimum: 1 },
        },
      },
    },
    loaders: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        required: ['loaderType', 'modalityType'],
        properties: {
          loaderType: { type: 'string', minLength: 1 },
          modalityType: { type: 'string', minLength: 1 },
          basePath: { type: 'string', minLength: 1 },
        },
      },
    },
    tokenizer: {
      type: 'object',
      additionalProperties: false,
      properties: {
        path: { type: 'string', minLength: 1 },
        tokenizerJson: { type: 'string', minLength: 1 },
        tokenizerConfig: { type: 'string', minLength: 1 },
        attachmentToken: { type: 'string', minLength: 1, default: DEFAULT_ATTACHMENT_TOKEN },
        modalityStartToken: { type: 'string', minLength: 1 },
        modalityEndToken: { type: 'string', minLength: 1 },
        modalityTokens: MODALITY_TOKENS_SCHEMA,
        chatTemplate: { type: 'string', minLength: 1 },
        addSpecialTokens: { type: 'boolean' },
      },
      oneOf: [{ required: ['path'] }, { required: ['tokenizerJson'] }],
    },
    batch: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        batchSize: { type: 'integer', minimum: 1, default: 8 },
        shardSize: { type: 'integer', minimum: 1, default: 1000 },
        workers: { type: 'integer', minimum: 0, maximum: 256 },
        maxLength: { type: 'integer', minimum: 1 },
      },
    },
    dataset: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        allowOutsideBase: { type: 'boolean', default: false },
      },
    },
  },
  required: ['modalities', 'tokenizer'],
});

/** True for strings that name a path relative to the config (`./x`, `../x`). Hub ids never start with a dot. */
function isRelativePath(v: unknown): v is string {
  return typeof v === 'string' && (v.startsWith('./') || v.startsWith('../') || v === '.' || v === '..');
}

function resolveTopLevelPaths<T extends Record<string, unknown>>(obj: T, baseDir: string, alwaysPaths: string[] = []): T {
  const out: Record<string, unknown> = { ...obj };
  for (const [k, v] of Object.entries(obj)) {
    if (isRelativePath(v) || (alwaysPaths.includes(k) && typeof v === 'string' && !path.isAbsolute(v))) {
      out[k] = path.resolve(baseDir, v as string);
    }
  }
  return out as T;
}

/**
 * Validates a run config object (defaults applied to a copy) and resolves its relative paths against `baseDir`.
 * Throws {@link ConfigValidationError} naming the JSON path and the rule. Registry-dependent checks (known
 * modality and loader names, per-modality schemas) are done by {@link checkRunConfig}.
 */
export function parseRunConfig(json: unknown, baseDir: string, name = 'run config'): ResolvedRunConfig {
  const data = structuredClone(json);
  const config = validateWithSchema<RunConfig>(RUN_CONFIG_SCHEMA, data, name);
  const issues: ConfigIssue[] = [];
  const types = new Map<string, number>();
  config.modalities.forEach((m, i) => {
    if (typeof m.modalityType === 'string') {
      if (types.has(m.modalityType)) {
        issues.push({ path: `/modalities/${i}/modalityType`, rule: 'unique', message: `modality type "${m.modalityType}" is already used by /modalities/${types.get(m.modalityType)}` });
      }
      types.set(m.modalityType, i);
    }
  });
  const loaderTypes = new Map<string, number>();
  config.loaders.forEach((l, i) => {
    if (loaderTypes.has(l.modalityType)) {
      issues.push({ path: `/loaders/${i}/modalityType`, rule: 'unique', message: `modality type "${l.modalityType}" already has a loader (/loaders/${loaderTypes.get(l.modalityType)})` });
    }
    loaderTypes.set(l.modalityType, i);
  });
  if (issues.length) throw new ConfigValidationError(name, issues);

  const tok = config.tokenizer;
  const tokenizerJson = tok.tokenizerJson
    ? path.resolve(baseDir, tok.tokenizerJson)
    : path.resolve(baseDir, tok.path!, 'tokenizer.json');
  const tokenizerConfig = tok.tokenizerConfig
    ? path.resolve(baseDir, tok.tokenizerConfig)
    : tok.path
      ? path.resolve(baseDir, tok.path, 'tokenizer_config.json')
      : undefined;
  return {
    config,
    baseDir,
    ...(config.plugins
      ? { plugins: config.plugins.map((p) => (p.startsWith('.') || path.isAbsolute(p) ? path.resolve(baseDir, p) : p)) }
      : {}),
    modalities: config.modalities.map((m) => resolveTopLevelPaths(m, baseDir)),
    loaders: config.loaders.map((l) => resolveTopLevelPaths(l, baseDir, ['basePath'])),
    tokenizerJson,
    ...(tokenizerConfig ? { tokenizerConfig } : {}),
    collator: {
      attachmentToken: tok.attachmentToken,
      ...(tok.modalityStartToken ? { modalityStartToken: tok.modalityStartToken } : {}),
      ...(tok.modalityEndToken ? { modalityEndToken: tok.modalityEndToken } : {}),
      ...(tok.modalityTokens ? { modalityTokens: tok.modalityTokens } : {}),
      ...(tok.chatTemplate ? { chatTemplate: tok.chatTemplate } : {}),
      ...(tok.addSpecialTokens !== undefined ? { addSpecialTokens: tok.addSpecialTokens } : {}),
      ...(config.batch.maxLength !== undefined ? { maxLength: config.batch.maxLength } : {}),
    },
    batch: config.batch,
    dataset: config.dataset,
  };
}

/**
 * Reads and validates a run config file. Relative paths resolve against the file's folder. A file that cannot
 * be read or parsed is a {@link ConfigValidationError} too (the CLI exits 2).
 */
export async function loadRunConfig(file: string): Promise<ResolvedRunConfig> {
  let json: unknown;
  try {
    json = await readJsonFile(file);
  } catch (e) {
    throw new ConfigValidationError(file, [{ path: '', rule: 'file', message: (e as Error).message }], { cause: e });
  }
  const resolved = parseRunConfig(json, path.dirname(path.resolve(file)), file);
  return { ...resolved, file: path.resolve(file) };
}

/** Prefixes the issues of a nested validation with the JSON path of the nested object. */
function prefixIssues(e: unknown, prefix: string): ConfigIssue[] {
  if (e instanceof ConfigValidationError) return e.issues.map((i) => ({ ...i, path: `${prefix}${i.path}` }));
  const msg = e instanceof Error ? e.message : String(e);
  const rule = e instanceof MultimeditronError && e.code === 'E_UNKNOWN' ? 'registered' : 'valid';
  return [{ path: prefix, rule, message: msg }];
}

/** What {@link checkRunConfig} returns: the modality configs as validated by their classes (defaults applied). */
export interface CheckedRunConfig {
  /** `config.toJSON()` of each modality, in config order (paths resolved). */
  modalities: ModalityConfigJSON[];
}

/**
 * Checks a run config against an instance's registries: every modality name is registered and its config
 * validates, every loader is registered and handles its modality type, every modality type has exactly one
 * loader, the tokenizer files exist, and all modalities share one `hiddenSize` (the LLM's). Every problem is
 * reported at once, with JSON paths into the run config.
 */
export async function checkRunConfig(mm: Multimeditron, rc: ResolvedRunConfig, name = rc.file ?? 'run config'): Promise<CheckedRunConfig> {
  const issues: ConfigIssue[] = [];
  const modalities: ModalityConfigJSON[] = [];
  rc.modalities.forEach((m, i) => {
    try {
      modalities.push(mm.modalities.createConfig(structuredClone(m)).toJSON());
    } catch (e) {
      issues.push(...prefixIssues(e, `/modalities/${i}`));
    }
  });
  rc.loaders.forEach((l, i) => {
    const { loaderType, modalityType, ...options } = l;
    try {
      mm.loaders.check(loaderType, modalityType);
      mm.loaders.create(loaderType, options);
    } catch (e) {
      issues.push(...prefixIssues(e, `/loaders/${i}`));
    }
    if (!rc.modalities.some((m) => m.modalityType === modalityType) && !modalities.some((m) => m.modalityType === modalityType)) {
      issues.push({ path: `/loaders/${i}/modalityType`, rule: 'modality', message: `no modality in /modalities handles "${modalityType}"` });
    }
  });
  modalities.forEach((m) => {
    const auto = [`fs-${m.modalityType}`, `raw-${m.modalityType}`];
    if (!rc.loaders.some((l) => l.modalityType === m.modalityType) && !auto.some((n) => mm.loaderRegistry.has(n))) {
      const i = rc.modalities.findIndex((x) => x.modelType === m.modelType);
      issues.push({
        path: '/loaders', rule: 'loader',
        message: `no loader for modality type "${m.modalityType}" (/modalities/${i}): none is listed and neither ${auto.join(' nor ')} is registered`,
      });
    }
  });
  const sizes = new Set(modalities.map((m) => m.hiddenSize));
  if (sizes.size > 1) {
    issues.push({ path: '/modalities', rule: 'hiddenSize', message: `all modalities must share the LLM's hiddenSize (got ${[...sizes].join(', ')})` });
  }
  const typesSeen = new Map<string, number>();
  modalities.forEach((m, i) => {
    if (typesSeen.has(m.modalityType)) {
      issues.push({ path: `/modalities/${i}/modalityType`, rule: 'unique', message: `modality type "${m.modalityType}" is handled twice` });
    }
    typesSeen.set(m.modalityType, i);
  });
  const tokPath = rc.config.tokenizer.tokenizerJson ? '/tokenizer/tokenizerJson' : '/tokenizer/path';
  if (!(await fs.stat(rc.tokenizerJson).then((s) => s.isFile(), () => false))) {
    issues.push({ path: tokPath, rule: 'file', message: `tokenizer.json not found: ${rc.tokenizerJson}` });
  }
  if (rc.tokenizerConfig && rc.config.tokenizer.tokenizerConfig && !(await fs.stat(rc.tokenizerConfig).then((s) => s.isFile(), () => false))) {
    issues.push({ path: '/tokenizer/tokenizerConfig', rule: 'file', message: `tokenizer_config.json not found: ${rc.tokenizerConfig}` });
  }
  if (issues.length) throw new ConfigValidationError(name, issues);
  return { modalities };
}
