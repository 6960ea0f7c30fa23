/**
 * The collator: tokenises samples with a Hugging Face `tokenizer.json`, renders instruction samples with the
 * tokenizer's chat template, expands each attachment placeholder into `numEmbeddings` slots (optionally wrapped
 * in start/end tokens), and builds `attentionMask`, `positionIds` and `labels` for a padded batch.
 *
 * Labels: `IGNORE_TOKEN_INDEX` (-100) on padding, on modality slots and their start/end tokens, and, for
 * instruction samples, on everything outside the assistant turns: system and user turns, the template's
 * headers, and each assistant header itself. An assistant turn's content and its end-of-turn token (whatever
 * the template renders up to the end of that turn) are labelled. Pretraining text is labelled everywhere
 * except padding and modality blocks.
 *
 * Turn boundaries come from the template itself: for assistant turn `i` the collator renders the turns before
 * it with `add_generation_prompt` (which ends with the assistant header) and the turns up to and including it,
 * tokenises both, and takes the length of their common prefix with the tokenised whole conversation. A token
 * that straddles a boundary (a BPE merge across it) is counted in the part that follows.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { readJsonFile, validateWithSchema, type JSONSchema } from '../config.js';
import { DEFAULT_ATTACHMENT_TOKEN, IGNORE_TOKEN_INDEX } from '../constants.js';
import { ConfigValidationError, ModelLoadError, MultimeditronError, type MultimeditronErrorOptions } from '../errors.js';
import { ASSISTANT_ROLE, countPlaceholders, USER_ROLE, type ConversationTurn, type Sample } from './sample.js';

/** A sample could not be collated (wrong `numEmbeddings`, placeholder mismatch, template problem). */
export class CollatorError extends MultimeditronError {
  constructor(
    message: string,
    /** Position of the sample in the batch, when known. */
    readonly batchIndex?: number,
    options: MultimeditronErrorOptions = {},
  ) {
    super('E_COLLATE', batchIndex === undefined ? message : `batch item ${batchIndex}: ${message}`, options);
  }
}

/** Start/end tokens around the slots of one modality type. Each string is tokenised (it may be several tokens). */
export interface ModalityWrapTokens {
  start?: string;
  end?: string;
}

/** Options of the {@link Collator}. */
export interface CollatorOptions {
  /** The placeholder; it must be a single token of the tokenizer. Default `<|reserved_special_token_0|>` (id 128002 in Llama 3). */
  attachmentToken?: string;
  /** Text inserted before every modality's slots (tokenised without special tokens; masked in labels). */
  modalityStartToken?: string;
  /** Text inserted after every modality's slots. */
  modalityEndToken?: string;
  /** Per-type start/end tokens, overriding {@link modalityStartToken}/{@link modalityEndToken}. */
  modalityTokens?: Record<string, ModalityWrapTokens>;
  /**
   * Longest sequence (after expansion). Longer samples are cut at this length, except that a cut never falls
   * inside a modality block (start token, slots, end token): the sequence then stops before the block, and the
   * block and every later one are dropped (reported in {@link CollatedBatch.droppedModalities}).
   */
  maxLength?: number;
  /** Where padding goes. Default `right`. */
  paddingSide?: 'right' | 'left';
  /** Round the padded length up to a multiple of this. */
  padToMultipleOf?: number;
  /** Padding token. Default: the config's `pad_token`, else its `eos_token`. */
  padToken?: string;
  /** Add the tokenizer's special tokens (e.g. `<|begin_of_text|>`) to pretraining text. Default true. */
  addSpecialTokens?: boolean;
  /** A chat template that replaces the tokenizer's. */
  chatTemplate?: string;
  /** Extra variables for the chat template (e.g. `date_string`). */
  templateVariables?: Record<string, unknown>;
}

/** JSON Schema of `modalityTokens` (per-type start/end wrapper tokens), shared with the run config. */
export const MODALITY_TOKENS_SCHEMA: JSONSchema = Object.freeze({
  type: 'object',
  additionalProperties: {
    type: 'object',
    properties: { start: { type: 'string', minLength: 1 }, end: { type: 'string', minLength: 1 } },
    additionalProperties: false,
  },
});

const OPTIONS_SCHEMA: JSONSchema = {
  type: 'object',
  properties: {
    attachmentToken: { type: 'string', minLength: 1 },
    modalityStartToken: { type: 'string', minLength: 1 },
    modalityEndToken: { type: 'string', minLength: 1 },
    modalityTokens: MODALITY_TOKENS_SCHEMA,
    maxLength: { type: 'integer', minimum: 1 },
    paddingSide: { enum: ['right', 'left'], default: 'right' },
    padToMultipleOf: { type: 'integer', minimum: 1 },
    padToken: { type: 'string', minLength: 1 },
    addSpecialTokens: { type: 'boolean', default: true },
    chatTemplate: { type: 'string', minLength: 1 },
    templateVariables: { type: 'object' },
  },
  additionalProperties: false,
};

/** One sample to collate with the number of embedding rows of each of its modalities. */
export interface CollatorItem {
  sample: Sample;
  /** One per entry of `sample.modalities`, in order: how many slots its placeholder expands to. */
  numEmbeddings: number[];
}

/** The token range of one modality's slots in a sample or batch. */
export interface ModalityRange {
  /** Row of the batch (0 in {@link EncodedSample}). */
  batchIndex: number;
  /** First slot (inclusive). */
  start: number;
  /** Last slot (exclusive); `end - start` equals the modality's `numEmbeddings`. */
  end: number;
  /** The modality type. */
  type: string;
  /** Index of the modality within its sample's `modalities`. */
  modalityIndex: number;
}

/** A modality that truncation removed. */
export interface DroppedModality {
  batchIndex: number;
  modalityIndex: number;
  type: string;
}

/** One sample, tokenised and expanded, before padding. */
export interface EncodedSample {
  inputIds: Int32Array;
  labels: Int32Array;
  /** Slot ranges of the kept modalities, in order (batchIndex 0). */
  modalityRanges: ModalityRange[];
  /** Whether `maxLength` cut the sample. */
  truncated: boolean;
  /** Length before truncation. */
  fullLength: number;
  /** Modalities removed by truncation (batchIndex 0). */
  droppedModalities: DroppedModality[];
}

/** A padded batch. Every array is `[batchSize * seqLength]`, row-major. */
export interface CollatedBatch {
  batchSize: number;
  seqLength: number;
  /** Token ids; modality slots hold the placeholder id, padding the pad id. */
  inputIds: Int32Array;
  /** 1 on real tokens (slots included), 0 on padding. */
  attentionMask: Int32Array;
  /** 0, 1, 2... over each row's real tokens; 0 on padding. */
  positionIds: Int32Array;
  /** Target ids, or -100 where nothing is learnt (see the module comment). */
  labels: Int32Array;
  /** Slot ranges of every kept modality, by row then by order in the sample. */
  modalityRanges: ModalityRange[];
  /** Real (unpadded) length of each row. */
  lengths: number[];
  /** Whether each row was cut by `maxLength`. */
  truncated: boolean[];
  /** Modalities removed by truncation; their embeddings are not needed. */
  droppedModalities: DroppedModality[];
}

/** The files {@link Collator.fromFiles} reads. */
export interface CollatorFiles {
  /** Path of `tokenizer.json`. */
  tokenizerJson: string;
  /** Path of `tokenizer_config.json` (special tokens, `chat_template`). */
  tokenizerConfig?: string;
  /** Path of a `chat_template.jinja`; wins over the config's template. */
  chatTemplateFile?: string;
}

/** The parts of `tokenizer_config.json` the collator reads. */
export interface TokenizerConfigJSON {
  bos_token?: unknown;
  eos_token?: unknown;
  pad_token?: unknown;
  unk_token?: unknown;
  chat_template?: unknown;
  [key: string]: unknown;
}

/** The string of a special-token entry of tokenizer_config.json (`"<s>"` or `{ content: "<s>" }`). */
export function tokenString(t: unknown): string | undefined {
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof (t as { content?: unknown }).content === 'string') return (t as { content: string }).content;
  return undefined;
}

/** The chat template of a tokenizer_config.json `chat_template` value (a string, or a named list: `default` first). */
export function templateFromConfig(ct: unknown): string | undefined {
  if (typeof ct === 'string') return ct;
  if (Array.isArray(ct)) {
    const named = ct.filter((x): x is { name: string; template: string } => typeof x?.template === 'string');
    return (named.find((x) => x.name === 'default') ?? named[0])?.template;
  }
  return undefined;
}

/**
 * Builds model inputs from samples. Create it once per tokenizer and reuse it:
 *
 * ```ts
 * const collator = await Collator.fromFolder('models/llama3', { maxLength: 2048 });
 * const batch = collator.collate([{ sample, numEmbeddings: [49] }]);
 * ```
 */
export class Collator {
  /** The resolved options (defaults applied). */
  readonly options: Readonly<CollatorOptions> & { paddingSide: 'right' | 'left'; addSpecialTokens: boolean };
  /** Id of the attachment placeholder. */
  readonly placeholderId: number;
  /** Id used for padding. */
  readonly padId: number;
  private readonly template: Template | undefined;
  private readonly specialVars: Record<string, string>;
  private readonly wrapCache = new Map<string, { start: number[]; end: number[] }>();

  /**
   * @param tokenizer a `@huggingface/tokenizers` tokenizer
   * @param config the `tokenizer_config.json` content (special tokens, chat template)
   * @param options see {@link CollatorOptions}
   */
  constructor(
    readonly tokenizer: Tokenizer,
    readonly config: TokenizerConfigJSON = {},
    options: CollatorOptions = {},
  ) {
    this.options = validateWithSchema(OPTIONS_SCHEMA, { ...options }, 'collator options');
    const o = this.options;
    const token = o.attachmentToken ?? DEFAULT_ATTACHMENT_TOKEN;
    const ids = this.encodeText(token, false);
    if (ids.length !== 1) {
      throw new ConfigValidationError('collator options', [{
        path: '/attachmentToken', rule: 'single-token',
        message: `${JSON.stringify(token)} is ${ids.length} tokens for this tokenizer; the placeholder must be one (special) token`,
      }]);
    }
    this.placeholderId = ids[0]!;
    const padToken = o.padToken ?? tokenString(config.pad_token) ?? tokenString(config.eos_token);
    const padId = padToken === undefined ? undefined : tokenizer.token_to_id(padToken);
    if (padId === undefined) {
      throw new ConfigValidationError('collator options', [{
        path: '/padToken', rule: 'required',
        message: padToken === undefined
          ? 'the tokenizer config has no pad_token or eos_token; pass padToken'
          : `pad token ${JSON.stringify(padToken)} is not in the vocabulary`,
      }]);
    }
    this.padId = padId;
    const source = o.chatTemplate ?? templateFromConfig(config.chat_template);
    this.template = source === undefined ? undefined : new Template(source);
    this.specialVars = {};
    for (const k of ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const) {
      const v = tokenString(config[k]);
      if (v !== undefined) this.specialVars[k] = v;
    }
    // tokenise wrappers now so that a bad option fails at construction
    for (const t of [undefined, ...Object.keys(o.modalityTokens ?? {})]) this.wrapIds(t);
  }

  /** Reads `tokenizer.json` (and optionally `tokenizer_config.json` and `chat_template.jinja`) and builds a collator. */
  static async fromFiles(opts: CollatorFiles & CollatorOptions): Promise<Collator> {
    const { tokenizerJson, tokenizerConfig, chatTemplateFile, ...options } = opts;
    const json = await readJsonFile(tokenizerJson);
    const config = tokenizerConfig === undefined ? {} : ((await readJsonFile(tokenizerConfig)) as TokenizerConfigJSON);
    if (chatTemplateFile !== undefined && options.chatTemplate === undefined) {
      try {
        options.chatTemplate = await fs.readFile(chatTemplateFile, 'utf8');
      } catch (e) {
        throw new ModelLoadError(chatTemplateFile, `cannot read: ${(e as Error).message}`, undefined, { cause: e });
      }
    }
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(json as object, config);
    } catch (e) {
      throw new ModelLoadError(tokenizerJson, `not a usable tokenizer.json: ${(e as Error).message}`, undefined, { cause: e });
    }
    return new Collator(tokenizer, config, options);
  }

  /** {@link fromFiles} on a folder holding `tokenizer.json`, and optionally `tokenizer_config.json` and `chat_template.jinja`. */
  static async fromFolder(dir: string, options: CollatorOptions = {}): Promise<Collator> {
    const exists = (f: string) => fs.access(f).then(() => true, () => false);
    const cfg = path.join(dir, 'tokenizer_config.json');
    const jinja = path.join(dir, 'chat_template.jinja');
    return Collator.fromFiles({
      tokenizerJson: path.join(dir, 'tokenizer.json'),
      ...((await exists(cfg)) ? { tokenizerConfig: cfg } : {}),
      ...((await exists(jinja)) ? { chatTemplateFile: jinja } : {}),
      ...options,
    });
  }

  /** Token ids of `text`, with or without the tokenizer's special tokens. */
  encodeText(text: string, addSpecialTokens: boolean): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** Renders turns with the chat template (as `apply_chat_template(..., tokenize=False)` does). */
  renderConversation(turns: readonly ConversationTurn[], addGenerationPrompt = false): string {
    if (!this.template) {
      throw new CollatorError('the tokenizer config has no chat_template; pass chatTemplate to render conversations');
    }
    return this.template.render({
      ...this.specialVars,
      ...(this.options.templateVariables ?? {}),
      messages: turns,
      add_generation_prompt: addGenerationPrompt,
    });
  }

  private wrapIds(type: string | undefined): { start: number[]; end: number[] } {
    const key = type ?? '\u0000default';
    let w = this.wrapCache.get(key);
    if (!w) {
      const o = this.options;
      const per = type === undefined ? undefined : o.modalityTokens?.[type];
      const start = per?.start ?? o.modalityStartToken;
      const end = per?.end ?? o.modalityEndToken;
      w = { start: start ? this.encodeText(start, false) : [], end: end ? this.encodeText(end, false) : [] };
      if ([...w.start, ...w.end].includes(this.placeholderId)) {
        throw new ConfigValidationError('collator options', [{ path: '/modalityTokens', rule: 'placeholder', message: 'start/end tokens may not contain the attachment placeholder' }]);
      }
      this.wrapCache.set(key, w);
    }
    return w;
  }

  /** Ids and labels of a conversation, before expansion. */
  private tokenizeConversation(turns: readonly ConversationTurn[]): { ids: number[]; labels: number[] } {
    const token = this.options.attachmentToken ?? DEFAULT_ATTACHMENT_TOKEN;
    turns.forEach((t, i) => {
      if (t.role !== USER_ROLE && countPlaceholders(t.content, token) > 0) {
        throw new CollatorError(`conversations[${i}] (${t.role}) contains the placeholder; placeholders belong in "${USER_ROLE}" turns`);
      }
    });
    const full = this.renderConversation(turns, false);
    const ids = this.encodeText(full, false);
    const labels = new Array<number>(ids.length).fill(IGNORE_TOKEN_INDEX);
    const boundary = (prefix: string, what: string): number => {
      if (!full.startsWith(prefix)) {
        throw new CollatorError(`the chat template does not render ${what} as a prefix of the whole conversation, so turn boundaries cannot be found`);
      }
      const p = this.encodeText(prefix, false);
      let k = 0;
      while (k < p.length && k < ids.length && p[k] === ids[k]) k++;
      return k;
    };
    turns.forEach((t, i) => {
      if (t.role !== ASSISTANT_ROLE) return;
      const from = boundary(this.renderConversation(turns.slice(0, i), true), `the turns before conversations[${i}] with the assistant header`);
      const to = boundary(this.renderConversation(turns.slice(0, i + 1), false), `conversations[0..${i}]`);
      for (let p = from; p < to; p++) labels[p] = ids[p]!;
    });
    return { ids, labels };
  }

  /** Tokenises and expands one sample; see {@link CollatorOptions.maxLength} for truncation. Throws {@link CollatorError}. */
  encode(sample: Sample, numEmbeddings: readonly number[]): EncodedSample {
    const mods = sample.modalities ?? [];
    if (numEmbeddings.length !== mods.length) {
      throw new CollatorError(`numEmbeddings has ${numEmbeddings.length} entries but the sample has ${mods.length} modalities`);
    }
    numEmbeddings.forEach((n, i) => {
      if (!Number.isInteger(n) || n < 1) throw new CollatorError(`numEmbeddings[${i}] must be a positive integer, got ${n}`);
    });
    let ids: number[];
    let labels: number[];
    if (typeof sample.text === 'string') {
      ids = this.encodeText(sample.text, this.options.addSpecialTokens);
      labels = ids.map((id) => (id === this.placeholderId ? IGNORE_TOKEN_INDEX : id));
    } else if (Array.isArray(sample.conversations)) {
      ({ ids, labels } = this.tokenizeConversation(sample.conversations));
    } else {
      throw new CollatorError('the sample has neither "text" nor "conversations"');
    }
    const found = ids.reduce((n, id) => n + (id === this.placeholderId ? 1 : 0), 0);
    if (found !== mods.length) {
      throw new CollatorError(`the tokenised sample has ${found} placeholder token(s) (id ${this.placeholderId}) but ${mods.length} modalities`);
    }

    const outIds: number[] = [];
    const outLabels: number[] = [];
    const blocks: Array<ModalityRange & { blockStart: number; blockEnd: number }> = [];
    let m = 0;
    for (let p = 0; p < ids.length; p++) {
      const id = ids[p]!;
      if (id !== this.placeholderId) {
        outIds.push(id);
        outLabels.push(labels[p]!);
        continue;
      }
      if (labels[p] !== IGNORE_TOKEN_INDEX) throw new CollatorError('a placeholder falls inside a labelled (assistant) span');
      const type = mods[m]!.type;
      const w = this.wrapIds(type);
      const blockStart = outIds.length;
      for (const t of w.start) outIds.push(t);
      const start = outIds.length;
      for (let k = 0; k < numEmbeddings[m]!; k++) outIds.push(this.placeholderId);
      const end = outIds.length;
      for (const t of w.end) outIds.push(t);
      while (outLabels.length < outIds.length) outLabels.push(IGNORE_TOKEN_INDEX);
      blocks.push({ batchIndex: 0, start, end, type, modalityIndex: m, blockStart, blockEnd: outIds.length });
      m++;
    }

    const fullLength = outIds.length;
    let length = fullLength;
    const max = this.options.maxLength;
    if (max !== undefined && length > max) {
      length = max;
      const cutBlock = blocks.find((b) => b.blockStart < length && length < b.blockEnd);
      if (cutBlock) length = cutBlock.blockStart;
    }
    const kept = blocks.filter((b) => b.blockEnd <= length);
    return {
      inputIds: Int32Array.from(outIds.slice(0, length)),
      labels: Int32Array.from(outLabels.slice(0, length)),
      modalityRanges: kept.map(({ batchIndex, start, end, type, modalityIndex }) => ({ batchIndex, start, end, type, modalityIndex })),
      truncated: length < fullLength,
      fullLength,
      droppedModalities: blocks.filter((b) => b.blockEnd > length).map((b) => ({ batchIndex: 0, modalityIndex: b.modalityIndex, type: b.type })),
    };
  }

  /** Pads encoded samples into a batch, in the order given. */
  pad(encoded: readonly EncodedSample[]): CollatedBatch {
    const batchSize = encoded.length;
    const lengths = encoded.map((e) => e.inputIds.length);
    let seqLength = Math.max(0, ...lengths);
    const mult = this.options.padToMultipleOf;
    if (mult && seqLength % mult) seqLength += mult - (seqLength % mult);
    const n = batchSize * seqLength;
    const inputIds = new Int32Array(n).fill(this.padId);
    const attentionMask = new Int32Array(n);
    const positionIds = new Int32Array(n);
    const labels = new Int32Array(n).fill(IGNORE_TOKEN_INDEX);
    const modalityRanges: ModalityRange[] = [];
    const droppedModalities: DroppedModality[] = [];
    encoded.forEach((e, b) => {
      const len = e.inputIds.length;
      const offset = b * seqLength + (this.options.paddingSide === 'left' ? seqLength - len : 0);
      inputIds.set(e.inputIds, offset);
      labels.set(e.labels, offset);
      attentionMask.fill(1, offset, offset + len);
      for (let k = 0; k < len; k++) positionIds[offset + k] = k;
      const shift = offset - b * seqLength;
      for (const r of e.modalityRanges) modalityRanges.push({ ...r, batchIndex: b, start: r.start + shift, end: r.end + shift });
      for (const d of e.droppedModalities) droppedModalities.push({ ...d, batchIndex: b });
    });
    return {
      batchSize, seqLength, inputIds, attentionMask, positionIds, labels, modalityRanges,
      lengths, truncated: encoded.map((e) => e.truncated), droppedModalities,
    };
  }

  /** Encodes and pads items, keeping their order (text and conversation samples may be mixed). */
  collate(items: readonly CollatorItem[]): CollatedBatch {
    return this.pad(
      items.map((it, i) => {
        try {
          return this.encode(it.sample, it.numEmbeddings);
        } catch (e) {
          if (e instanceof CollatorError && e.batchIndex === undefined) throw new CollatorError(e.message, i, { cause: e });
          throw e;
        }
      }),
    );
  }
}
