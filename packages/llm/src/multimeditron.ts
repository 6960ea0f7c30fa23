/**
 * The MultiMeditron model (the original's `MultiModalModelForCausalLM`): a decoder plus the modalities its
 * config names, built from the registries. It reads and writes the original's checkpoint layout:
 *
 * - `config.json`: `model_type` "multimodal", `modalities` (modality configs in snake_case: `model_type`,
 *   `modality_type`, `hidden_size`, `clip_name`, `projection_type`, ...), `llm_path`, `vocab_size`,
 *   `pad_token_idx`, `eos_token_idx`, `padding_side`, `dtype`;
 * - weights (`model.safetensors` or sharded): `model.<decoder keys>` and, per modality i,
 *   `modalities_with_projection.<i>.feature_extractor.<encoder keys>` and
 *   `modalities_with_projection.<i>.projector.projection.<N>.{weight,bias}` (`projector.<N>.*` is read too).
 *
 * The decoder's config.json comes from `llm_path` (its generation_config.json too, unless the checkpoint folder
 * has one), each encoder's config and preprocessor from its `clip_name` (local folder, Hugging Face cache or hub,
 * through the resolver).
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  ConfigValidationError, DEFAULT_ATTACHMENT_TOKEN, FLOAT_DTYPES, InputError, mergeEmbeddings, ModelLoadError,
  MultimeditronError, readJsonFile, SafetensorsCheckpoint, writeSafetensors, type BaseModality,
  type CollatedBatch, type ModalityInput, type Multimeditron, type WritableTensor,
} from '@multimeditron/core';
import { defaultLanguageModelRegistry } from './auto.js';
import { openCheckpoint, readDecoderConfig, readGenerationConfig, type DecoderForCausalLM } from './decoder.js';
import { GenerationError } from './errors.js';
import type { GenerationOptions } from './generation/config.js';
import { generateStream, type FinishReason, type GenerationChunk } from './generation/generate.js';
import type { LanguageModelRegistry } from './registry.js';
import { TextTokenizer, type ChatMessage } from './tokenizer.js';

/** `model_type` of a MultiMeditron checkpoint's config.json. */
export const MULTIMODAL_MODEL_TYPE = 'multimodal';
/** Prefix of the decoder's keys in a MultiMeditron checkpoint. */
export const LLM_PREFIX = 'model.';
/** Prefix of modality i's keys: `modalities_with_projection.<i>.`. */
export const MODALITY_PREFIX = 'modalities_with_projection.';

/** config.json of a MultiMeditron checkpoint (snake_case, as the original writes it; other keys are kept). */
export interface MultiMeditronConfigJSON {
  model_type: 'multimodal';
  modalities: Array<Record<string, unknown>>;
  llm_path: string;
  vocab_size?: number;
  pad_token_idx?: number;
  eos_token_idx?: number | number[];
  padding_side?: 'left' | 'right';
  dtype?: string;
  /** The placeholder token (default `<|reserved_special_token_0|>`). */
  attachment_token?: string;
  [key: string]: unknown;
}

/** Options of {@link MultiMeditronModel.fromPretrained} and {@link MultiMeditronModel.fromConfig}. */
export interface MultiMeditronLoadOptions {
  /** The instance whose modality registry, loaders and resolver are used (it lists the modality plugins). */
  mm: Multimeditron;
  /** Decoder families. Default: the built-in ones plus those the instance's plugins list. */
  languageModels?: LanguageModelRegistry;
}

/** One attachment of a generation request: `{ type: 'image', value: 'xray.png' }` (a path, bytes, ...). */
export type Attachment = ModalityInput;

/** A generation request to the MultiMeditron model. */
export interface MultiMeditronGenerateRequest extends GenerationOptions {
  /** Chat messages, rendered with the tokenizer's chat template and the generation prompt. */
  messages?: ChatMessage[];
  /** A plain prompt, encoded with the tokenizer's special tokens (BOS where the tokenizer adds one). */
  text?: string;
  /** Attachments, filling the placeholders in order. */
  modalities?: Attachment[];
  /** `enable_thinking` for the chat template (Qwen3); omitted when undefined. */
  enableThinking?: boolean;
  /** Folder that relative attachment paths resolve against (default: the current folder). */
  basePath?: string;
}

/** A request turned into decoder input by {@link MultiMeditronModel.prepare}. */
export interface PreparedInput {
  /** The encoded prompt, before placeholders are expanded. */
  promptIds: number[];
  /** The ids with every placeholder expanded to its slots. */
  inputIds: number[];
  /** The placeholder id (-1 when the tokenizer has none). */
  placeholderId: number;
  /** Token embeddings with the modality rows in the slots [1, length, hidden]; the caller disposes it. */
  inputsEmbeds: tf.Tensor3D;
}

/** The outcome of one generation. */
export interface MultiMeditronGenerateResult {
  /** The encoded prompt, before placeholders are expanded. */
  promptIds: number[];
  /** New token ids (with the eos token when one ended generation). */
  ids: number[];
  text: string;
  finishReason: FinishReason;
}

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const camel = (k: string) => k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** A modality config in the original's snake_case -> our camelCase JSON. */
export function modalityConfigFromSnake(json: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(json).map(([k, v]) => [camel(k), v]));
}

/** Our camelCase modality config JSON -> the original's snake_case. */
export function modalityConfigToSnake(json: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(json).map(([k, v]) => [snake(k), v]));
}

const exists = (p: string) => fs.access(p).then(() => true, () => false);

/** A relative path that exists beside the checkpoint is taken from there; anything else is left to the resolver. */
async function besides(dir: string, nameOrPath: string): Promise<string> {
  if (path.isAbsolute(nameOrPath)) return nameOrPath;
  const local = path.resolve(dir, nameOrPath);
  return (await exists(local)) ? local : nameOrPath;
}

/** Our projector weight names (`layers.N.weight`) <-> the original's (`projection.N.weight`, or `N.weight`). */
function projectorKeys(name: string): string[] {
  const rest = name.replace(/^layers\./, '');
  return [`projection.${rest}`, rest];
}

/** Validates the top level of a MultiMeditron config.json. */
export function validateMultiMeditronConfig(json: unknown, file: string): MultiMeditronConfigJSON {
  const issues: Array<{ path: string; rule: string; message: string }> = [];
  const o = (json ?? {}) as Record<string, unknown>;
  if (typeof json !== 'object' || json === null || Array.isArray(json)) issues.push({ path: '/', rule: 'type', message: 'must be an object' });
  else {
    if (o['model_type'] !== MULTIMODAL_MODEL_TYPE) issues.push({ path: '/model_type', rule: 'const', message: `must be "${MULTIMODAL_MODEL_TYPE}"` });
    if (typeof o['llm_path'] !== 'string' || !o['llm_path']) issues.push({ path: '/llm_path', rule: 'required', message: 'must name the language model (folder or hub id)' });
    if (!Array.isArray(o['modalities'])) issues.push({ path: '/modalities', rule: 'type', message: 'must be an array of modality configs' });
    else {
      (o['modalities'] as unknown[]).forEach((m, i) => {
        if (!m || typeof m !== 'object' || typeof (m as Record<string, unknown>)['model_type'] !== 'string') {
          issues.push({ path: `/modalities/${i}/model_type`, rule: 'required', message: 'must name a registered modality' });
        }
      });
    }
    if (o['padding_side'] !== undefined && o['padding_side'] !== 'left' && o['padding_side'] !== 'right') {
      issues.push({ path: '/padding_side', rule: 'enum', message: 'must be "left" or "right"' });
    }
    for (const k of ['vocab_size', 'pad_token_idx']) {
      if (o[k] !== undefined && o[k] !== null && !(Number.isInteger(o[k]) && (o[k] as number) >= 0)) {
        issues.push({ path: `/${k}`, rule: 'type', message: 'must be a non-negative integer' });
      }
    }
  }
  if (issues.length) throw new ConfigValidationError(file, issues);
  return o as MultiMeditronConfigJSON;
}

/** The MultiMeditron model: a decoder and its modalities. */
export class MultiMeditronModel {
  private constructor(
    /** config.json content (snake_case). */
    readonly config: MultiMeditronConfigJSON,
    readonly llm: DecoderForCausalLM,
    /** The modalities, in config order. */
    readonly modalities: BaseModality[],
    readonly tokenizer: TextTokenizer | undefined,
    /** The folder the tokenizer came from. */
    readonly tokenizerDir: string | undefined,
    private readonly mm: Multimeditron,
    /** Where relative paths of the config (llm_path, clip_name, ...) resolve. */
    readonly sourceDir: string,
  ) {}

  /** Whether `dir` holds a MultiMeditron checkpoint (config.json with `model_type` "multimodal"). */
  static async isCheckpoint(dir: string): Promise<boolean> {
    const file = path.join(dir, 'config.json');
    if (!(await exists(file))) return false;
    const json = (await readJsonFile(file)) as Record<string, unknown>;
    return json?.['model_type'] === MULTIMODAL_MODEL_TYPE;
  }

  /**
   * Loads a checkpoint saved by the original or by {@link savePretrained}. Every key and shape is checked
   * before any weight is overwritten; a failure releases what was built.
   */
  static async fromPretrained(nameOrDir: string, options: MultiMeditronLoadOptions): Promise<MultiMeditronModel> {
    const dir = await options.mm.resolver.resolve(nameOrDir);
    const file = path.join(dir, 'config.json');
    const config = validateMultiMeditronConfig(await readJsonFile(file), file);
    const checkpoint = await openCheckpoint(dir);
    try {
      return await MultiMeditronModel.build(config, dir, options, checkpoint);
    } finally {
      await checkpoint.close();
    }
  }

  /**
   * A fresh model from a config: the decoder's own weights from `llm_path`, each modality's pretrained encoder
   * and a newly initialised projector (what the trainer's ALIGNMENT stage starts from). `baseDir` is where
   * relative paths in the config resolve (default: the current folder).
   */
  static async fromConfig(config: MultiMeditronConfigJSON, options: MultiMeditronLoadOptions & { baseDir?: string }): Promise<MultiMeditronModel> {
    const checked = validateMultiMeditronConfig(structuredClone(config), '<config>');
    return MultiMeditronModel.build(checked, path.resolve(options.baseDir ?? '.'), options, undefined);
  }

  private static async build(
    config: MultiMeditronConfigJSON,
    dir: string,
    options: MultiMeditronLoadOptions,
    checkpoint: SafetensorsCheckpoint | undefined,
  ): Promise<MultiMeditronModel> {
    const { mm } = options;
    const file = path.join(dir, 'config.json');
    const registry = options.languageModels ?? (() => {
      const r = defaultLanguageModelRegistry();
      r.addFromPlugins(mm);
      return r;
    })();
    const llmDir = await mm.resolver.resolve(await besides(dir, config.llm_path));
    const llmConfigFile = path.join(llmDir, 'config.json');
    const llmJson = (await readJsonFile(llmConfigFile)) as Record<string, unknown>;
    const family = registry.get(String(llmJson?.['model_type']), llmConfigFile).decoder;
    const llmConfig = await readDecoderConfig(llmDir, family.configDefaults);
    if (config.vocab_size !== undefined && config.vocab_size !== null && config.vocab_size !== llmConfig.vocabSize) {
      throw new ConfigValidationError(file, [{ path: '/vocab_size', rule: 'const', message: `${config.vocab_size} disagrees with ${llmConfigFile} (${llmConfig.vocabSize})` }]);
    }
    // modality configs are checked (registry, schema, hidden size) before any weight is read
    const modalityJson = await Promise.all(config.modalities.map(async (m, i) => {
      const json = modalityConfigFromSnake(m);
      for (const [k, v] of Object.entries(json)) if (typeof v === 'string' && /Name$/.test(k)) json[k] = await besides(dir, v);
      if (json['hiddenSize'] !== undefined && json['hiddenSize'] !== llmConfig.hiddenSize) {
        throw new ConfigValidationError(file, [{ path: `/modalities/${i}/hidden_size`, rule: 'const', message: `${String(json['hiddenSize'])} is not the LLM's hidden_size ${llmConfig.hiddenSize}` }]);
      }
      try {
        return mm.modalities.createConfig({ ...json, hiddenSize: llmConfig.hiddenSize });
      } catch (e) {
        if (e instanceof ConfigValidationError) {
          throw new ConfigValidationError(file, e.issues.map((x) => ({ ...x, path: `/modalities/${i}${snakePath(x.path)}` })), { cause: e });
        }
        throw new MultimeditronError((e as MultimeditronError).code ?? 'E_CONFIG', `${file}: modalities[${i}]: ${(e as Error).message}`, { cause: e });
      }
    }));
    if (checkpoint) checkModalityKeys(checkpoint, config.modalities.length);
    const llm = new family(llmConfig, llmDir);
    const modalities: BaseModality[] = [];
    try {
      await llm.loadFolder(llmDir, checkpoint ? { weights: { checkpoint, prefix: LLM_PREFIX } } : {});
      if (checkpoint) {
        // the checkpoint's own generation_config.json (savePretrained writes one) wins over llm_path's
        const own = await readGenerationConfig(dir);
        if (Object.keys(own).length) llm.generationConfig = own;
      }
      for (const m of modalityJson) modalities.push(await mm.modalities.fromConfig(m));
      if (checkpoint) await loadModalityWeights(checkpoint, modalities);
      const tokDir = (await TextTokenizer.existsIn(dir)) ? dir : (await TextTokenizer.existsIn(llmDir)) ? llmDir : undefined;
      const tokenizer = tokDir ? await TextTokenizer.fromFolder(tokDir) : undefined;
      return new MultiMeditronModel(config, llm, modalities, tokenizer, tokDir, mm, dir);
    } catch (e) {
      llm.dispose();
      for (const m of modalities) m.dispose();
      throw e;
    }
  }

  /** The placeholder token id. */
  get attachmentTokenId(): number {
    const tok = this.requireTokenizer();
    const token = this.config.attachment_token ?? DEFAULT_ATTACHMENT_TOKEN;
    const ids = tok.encode(token, false);
    if (ids.length !== 1) {
      throw new ConfigValidationError('config.json', [{ path: '/attachment_token', rule: 'single-token', message: `${JSON.stringify(token)} is ${ids.length} tokens for this tokenizer` }]);
    }
    return ids[0]!;
  }

  private requireTokenizer(): TextTokenizer {
    if (!this.tokenizer) {
      throw new ModelLoadError(this.llm.folder ?? '<model>', 'no tokenizer.json in the checkpoint folder nor in llm_path');
    }
    return this.tokenizer;
  }

  /** The modality that handles a dataset type. */
  modalityFor(type: string): BaseModality {
    const m = this.modalities.find((x) => x.config.modalityType === type);
    if (!m) {
      throw new GenerationError(
        `no modality of this model handles "${type}" (it has: ${this.modalities.map((x) => x.config.modalityType).join(', ') || 'none'})`,
        'modalities',
      );
    }
    return m;
  }

  /** Encodes the prompt of a request (placeholders not expanded). */
  encodePrompt(request: Pick<MultiMeditronGenerateRequest, 'messages' | 'text' | 'enableThinking'>): number[] {
    const tok = this.requireTokenizer();
    if ((request.messages === undefined) === (request.text === undefined)) throw new GenerationError('give exactly one of messages and text', 'messages');
    if (request.messages) {
      const rendered = tok.applyChatTemplate(request.messages, {
        addGenerationPrompt: true,
        ...(request.enableThinking === undefined ? {} : { enableThinking: request.enableThinking }),
      });
      return tok.encode(rendered, false);
    }
    return tok.encode(request.text!, true);
  }

  /**
   * Prepares a request for the decoder: encodes the prompt, checks the placeholder count against the
   * attachments (before any compute), loads and processes every attachment (so a bad file fails before the
   * encoders run), embeds them, expands each placeholder into its slots and merges the rows into the token
   * embeddings. The caller disposes `inputsEmbeds`.
   */
  async prepare(request: Pick<MultiMeditronGenerateRequest, 'messages' | 'text' | 'modalities' | 'enableThinking' | 'basePath'>): Promise<PreparedInput> {
    const { messages, text, modalities: attachments = [], enableThinking, basePath } = request;
    const promptIds = this.encodePrompt({ ...(messages ? { messages } : {}), ...(text !== undefined ? { text } : {}), ...(enableThinking === undefined ? {} : { enableThinking }) });
    const placeholder = attachments.length ? this.attachmentTokenId : this.attachmentTokenIdSafe();
    const count = promptIds.filter((id) => id === placeholder).length;
    if (count !== attachments.length) {
      throw new GenerationError(
        `the prompt has ${count} placeholder(s) (${this.config.attachment_token ?? DEFAULT_ATTACHMENT_TOKEN}) but ${attachments.length} attachment(s) were given`,
        'modalities',
      );
    }
    const mods = attachments.map((a) => this.modalityFor(a.type));
    const processed = [];
    for (const [i, a] of attachments.entries()) {
      const raw = await this.loadAttachment(a, basePath);
      processed.push(mods[i]!.processor.processAll({ type: a.type, value: raw }));
    }
    const embeddings: tf.Tensor2D[] = [];
    try {
      const numEmbeddings: number[] = [];
      for (const [i, parts] of processed.entries()) {
        const e = mods[i]!.forward(parts.map((p) => p.value));
        const rowsN = e.shape[0] * e.shape[1];
        embeddings.push(tf.tidy(() => tf.reshape(e, [rowsN, e.shape[2]]) as tf.Tensor2D));
        e.dispose();
        numEmbeddings.push(rowsN);
      }
      const ids: number[] = [];
      const ranges: CollatedBatch['modalityRanges'] = [];
      let m = 0;
      for (const id of promptIds) {
        if (id !== placeholder) {
          ids.push(id);
          continue;
        }
        const start = ids.length;
        for (let k = 0; k < numEmbeddings[m]!; k++) ids.push(placeholder);
        ranges.push({ batchIndex: 0, start, end: ids.length, type: attachments[m]!.type, modalityIndex: m });
        m++;
      }
      if (ids.length >= this.llm.config.maxPositionEmbeddings) {
        throw new GenerationError(`the prompt is ${ids.length} tokens once attachments are expanded; max_position_embeddings is ${this.llm.config.maxPositionEmbeddings}`, 'messages');
      }
      const batch = { batchSize: 1, seqLength: ids.length, inputIds: Int32Array.from(ids), modalityRanges: ranges } as unknown as CollatedBatch;
      const inputsEmbeds = mergeEmbeddings(this.llm.embedTokens as unknown as tf.Tensor2D, batch, embeddings);
      return { promptIds, inputIds: ids, placeholderId: placeholder, inputsEmbeds };
    } finally {
      for (const e of embeddings) e.dispose();
    }
  }

  /**
   * Streams the answer to a request: {@link prepare} (load, process, embed, merge), then decode. Every tensor
   * is released when the stream ends, also when the consumer stops early. Returns the result at the end.
   */
  async *stream(request: MultiMeditronGenerateRequest): AsyncGenerator<GenerationChunk, MultiMeditronGenerateResult, undefined> {
    const { messages: _m, text: _t, modalities: _a, enableThinking: _e, basePath: _b, ...options } = request;
    const prepared = await this.prepare(request);
    let inputsEmbeds: tf.Tensor3D | undefined = prepared.inputsEmbeds;
    const it = generateStream(
      this.llm,
      { inputsEmbeds, promptIds: [prepared.promptIds.filter((id) => id !== prepared.placeholderId)] },
      this.generationOptions(options),
      this.tokenizer,
    );
    try {
      for (;;) {
        const r = await it.next();
        // the prefill has consumed the embeddings
        inputsEmbeds?.dispose();
        inputsEmbeds = undefined;
        if (r.done) {
          const row = r.value[0]!;
          return { promptIds: prepared.promptIds, ids: row.ids, text: row.text, finishReason: row.finishReason };
        }
        yield r.value;
      }
    } finally {
      inputsEmbeds?.dispose();
      await it.return(undefined as never);
    }
  }

  /** {@link stream} to the end. */
  async generate(request: MultiMeditronGenerateRequest): Promise<MultiMeditronGenerateResult> {
    const it = this.stream(request);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  private attachmentTokenIdSafe(): number {
    try {
      return this.attachmentTokenId;
    } catch {
      return -1;
    }
  }

  /** The eos ids: the call's, else generation_config's, else config.json's `eos_token_idx`. */
  private generationOptions(options: GenerationOptions): GenerationOptions {
    const out = { ...options };
    if (out.eosTokenIds === undefined && this.llm.generationConfig['eos_token_id'] === undefined && this.config.eos_token_idx !== undefined) {
      const e = this.config.eos_token_idx;
      out.eosTokenIds = Array.isArray(e) ? e : [e];
    }
    if (out.padTokenId === undefined && typeof this.config.pad_token_idx === 'number') out.padTokenId = this.config.pad_token_idx;
    return out;
  }

  private async loadAttachment(a: Attachment, basePath: string | undefined): Promise<unknown> {
    const names = this.mm.loaders.forModalityType(a.type);
    const bytes = a.value instanceof Uint8Array || (typeof a.value === 'object' && a.value !== null && 'bytes' in (a.value as object));
    const pick = names.find((n) => (bytes ? n.startsWith('raw-') : n.startsWith('fs-'))) ?? names[0];
    if (!pick) throw new GenerationError(`no loader is registered for "${a.type}"`, 'modalities');
    const loader = this.mm.loaders.create(pick, { basePath: basePath ?? process.cwd(), allowOutsideBase: true });
    try {
      return await loader.load(a);
    } catch (e) {
      if (e instanceof MultimeditronError) throw e;
      throw new InputError(typeof a.value === 'string' ? a.value : `<${a.type}>`, (e as Error).message, { cause: e });
    }
  }

  /**
   * Writes the checkpoint in the original's layout: config.json, the decoder's generation_config.json, the
   * tokenizer files, and the weights (`model.safetensors`, or shards of at most `maxShardBytes` with
   * `model.safetensors.index.json`). Files are written to a temporary folder first, then moved in, so a
   * failure leaves nothing half-written.
   */
  async savePretrained(dir: string, options: { dtype?: 'F32' | 'F16' | 'BF16'; maxShardBytes?: number } = {}): Promise<void> {
    const dtype = options.dtype ?? 'F32';
    const tensors = new Map<string, WritableTensor>(this.llm.hostWeights(LLM_PREFIX, dtype));
    this.modalities.forEach((m, i) => {
      const p = `${MODALITY_PREFIX}${i}.`;
      for (const [k, v] of m.encoderVariables()) tensors.set(`${p}feature_extractor.${k}`, { data: v.dataSync() as Float32Array, shape: [...v.shape], dtype });
      for (const [k, v] of m.projector.namedWeights()) tensors.set(`${p}projector.${projectorKeys(k)[0]}`, { data: v.dataSync() as Float32Array, shape: [...v.shape], dtype });
    });
    // relative paths in the config were relative to the source folder: rewrite them for the new one
    const target = path.resolve(dir);
    const relocate = async (v: unknown): Promise<unknown> => {
      if (typeof v !== 'string' || path.isAbsolute(v)) return v;
      const abs = path.resolve(this.sourceDir, v);
      return (await exists(abs)) ? path.relative(target, abs) || '.' : v;
    };
    const modalities = [];
    for (const [i, m] of this.modalities.entries()) {
      const original = this.config.modalities[i] ?? {};
      const entry: Record<string, unknown> = { ...modalityConfigToSnake(m.config.toJSON() as Record<string, unknown>), ...original };
      for (const k of Object.keys(original)) if (k.endsWith('_name')) entry[k] = await relocate(original[k]);
      modalities.push(entry);
    }
    const config: MultiMeditronConfigJSON = {
      ...this.config,
      llm_path: (await relocate(this.config.llm_path)) as string,
      modalities,
      vocab_size: this.llm.config.vocabSize,
    };
    await fs.mkdir(path.dirname(target), { recursive: true });
    const tmp = `${path.resolve(dir)}.tmp-${process.pid}-${Date.now()}`;
    await fs.mkdir(tmp, { recursive: true });
    try {
      await fs.writeFile(path.join(tmp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
      await fs.writeFile(path.join(tmp, 'generation_config.json'), `${JSON.stringify(this.llm.generationConfig, null, 2)}\n`);
      if (this.tokenizerDir) {
        for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja', 'chat_template.json']) {
          const from = path.join(this.tokenizerDir, f);
          if (await exists(from)) await fs.copyFile(from, path.join(tmp, f));
        }
      }
      await writeShards(tmp, tensors, options.maxShardBytes ?? 2 * 1024 ** 3);
      await fs.mkdir(dir, { recursive: true });
      for (const f of await fs.readdir(tmp)) await fs.rename(path.join(tmp, f), path.join(dir, f));
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  }

  /** Releases every tensor (decoder and modalities). */
  dispose(): void {
    this.llm.dispose();
    for (const m of this.modalities) m.dispose();
  }
}

function snakePath(p: string): string {
  return p.split('/').map(snake).join('/');
}

/** Checks that the checkpoint's modality keys name modalities the config has. */
function checkModalityKeys(checkpoint: SafetensorsCheckpoint, count: number): void {
  for (const k of checkpoint.keys()) {
    if (!k.startsWith(MODALITY_PREFIX)) continue;
    const i = Number(k.slice(MODALITY_PREFIX.length).split('.')[0]);
    if (!Number.isInteger(i) || i < 0 || i >= count) {
      throw new ModelLoadError(checkpoint.fileOf(k), `names modality ${i}, but config.json lists ${count} modalit${count === 1 ? 'y' : 'ies'}`, k);
    }
  }
}

/** Overwrites each modality's projector (required) and encoder (when stored) from the checkpoint. */
async function loadModalityWeights(checkpoint: SafetensorsCheckpoint, modalities: BaseModality[]): Promise<void> {
  const plan: Array<{ key: string; variable: tf.Variable }> = [];
  modalities.forEach((m, i) => {
    const p = `${MODALITY_PREFIX}${i}.`;
    for (const [k, v] of m.encoderVariables()) {
      const key = `${p}feature_extractor.${k}`;
      if (checkpoint.has(key)) plan.push({ key, variable: v });
    }
    for (const [k, v] of m.projector.namedWeights()) {
      const key = projectorKeys(k).map((x) => `${p}projector.${x}`).find((x) => checkpoint.has(x));
      if (!key) throw new ModelLoadError(checkpoint.source, 'missing projector weight', `${p}projector.${projectorKeys(k)[0]}`);
      plan.push({ key, variable: v });
    }
  });
  for (const { key, variable } of plan) {
    const info = checkpoint.info(key);
    if (!FLOAT_DTYPES.has(info.dtype)) throw new ModelLoadError(checkpoint.fileOf(key), `dtype ${info.dtype} is not a float type`, key);
    if (info.shape.join() !== variable.shape.join()) {
      throw new ModelLoadError(checkpoint.fileOf(key), `shape [${info.shape}] disagrees with the modality's [${variable.shape}]`, key);
    }
  }
  for (const { key, variable } of plan) {
    const t = await checkpoint.readTensor(key);
    try {
      variable.assign(t);
    } finally {
      t.dispose();
    }
  }
}

/** Writes tensors as one file, or as shards with an index when they exceed `maxBytes`. */
async function writeShards(dir: string, tensors: Map<string, WritableTensor>, maxBytes: number): Promise<void> {
  const bytesOf = (t: WritableTensor) => t.data.length * (t.dtype === 'F16' || t.dtype === 'BF16' ? 2 : 4);
  const shards: Array<Map<string, WritableTensor>> = [new Map()];
  let size = 0;
  let total = 0;
  for (const [k, t] of tensors) {
    const b = bytesOf(t);
    if (size > 0 && size + b > maxBytes) {
      shards.push(new Map());
      size = 0;
    }
    shards[shards.length - 1]!.set(k, t);
    size += b;
    total += b;
  }
  if (shards.length === 1) {
    await writeSafetensors(path.join(dir, 'model.safetensors'), shards[0]!, { format: 'pt' });
    return;
  }
  const n = shards.length;
  const name = (i: number) => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
  const weightMap: Record<string, string> = {};
  for (const [i, s] of shards.entries()) {
    await writeSafetensors(path.join(dir, name(i)), s, { format: 'pt' });
    for (const k of s.keys()) weightMap[k] = name(i);
  }
  await fs.writeFile(path.join(dir, 'model.safetensors.index.json'), `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`);
}

