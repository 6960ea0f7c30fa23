/**
 * The generation loop: left-pad the prompts, prefill the KV cache, then one token per step for every row
 * that is not finished, with the logits processors of {@link selectToken}. Streams {@link GenerationChunk}s
 * as an async iterator; {@link generate} collects them.
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import type { DecoderForCausalLM } from '../decoder.js';
import { GenerationError } from '../errors.js';
import { StreamingDecoder, type TextTokenizer } from '../tokenizer.js';
import { resolveGenerationOptions, type GenerationOptions, type ResolvedGenerationOptions } from './config.js';
import { selectToken } from './processors.js';
import { SeededRandom } from './rng.js';

/** Why a row stopped: an eos token, a stop string, or the token budget / position limit. */
export type FinishReason = 'eos' | 'stop' | 'length';

/** One streamed token of one row. */
export interface GenerationChunk {
  /** Row of the batch. */
  row: number;
  /** The token id. */
  tokenId: number;
  /** New complete text (never a split UTF-8 character); '' while a character or a possible stop string is pending. */
  text: string;
  /** Set on the row's last chunk. */
  finishReason?: FinishReason;
}

/** The result of one row. */
export interface GenerationResult {
  /** New token ids (with the eos token when one ended the row). */
  ids: number[];
  /** Their text (special tokens skipped; cut before a stop string). */
  text: string;
  finishReason: FinishReason;
}

/** The prompt(s) of a generation. */
export interface GenerationInput {
  /** One id list per row; rows may differ in length (they are left-padded). */
  inputIds?: ReadonlyArray<readonly number[]>;
  /**
   * Already merged input embeddings [batch, length, hidden], left-padded, with {@link attentionMask}. The
   * caller keeps ownership.
   */
  inputsEmbeds?: tf.Tensor3D;
  /** Mask of {@link inputsEmbeds} rows (1 real, 0 padding). Default all ones. */
  attentionMask?: ReadonlyArray<readonly number[]>;
  /** Ids the repetition penalty counts as "already seen" for {@link inputsEmbeds} rows (default none). */
  promptIds?: ReadonlyArray<readonly number[]>;
}

class RowState {
  readonly ids: number[] = [];
  readonly decoder: StreamingDecoder | undefined;
  finish: FinishReason | undefined;
  private emitted = 0;
  private finalText: string | undefined;

  constructor(tokenizer: TextTokenizer | undefined, private readonly stops: string[]) {
    this.decoder = tokenizer ? new StreamingDecoder(tokenizer) : undefined;
  }

  /** Text that can be released now: complete characters, minus a tail that may still become a stop string. */
  private releasable(text: string): number {
    let hold = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, text.length); k > hold; k--) {
        if (text.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    return text.length - hold;
  }

  /** Adds a non-eos token; returns the text delta and whether a stop string ended the row. */
  push(id: number): { text: string; stopped: boolean } {
    this.ids.push(id);
    if (!this.decoder) return { text: '', stopped: false };
    this.decoder.push(id);
    const text = this.decoder.decoded;
    if (this.stops.length) {
      const from = Math.max(0, this.emitted - Math.max(...this.stops.map((s) => s.length)));
      let cut = -1;
      for (const s of this.stops) {
        const at = text.indexOf(s, from);
        if (at >= 0 && (cut < 0 || at < cut)) cut = at;
      }
      if (cut >= 0) {
        this.finalText = text.slice(0, cut);
        const delta = this.finalText.slice(this.emitted);
        this.emitted = this.finalText.length;
        return { text: delta, stopped: true };
      }
    }
    const end = this.releasable(text);
    const delta = end > this.emitted ? text.slice(this.emitted, end) : '';
    this.emitted = Math.max(this.emitted, end);
    return { text: delta, stopped: false };
  }

  /** The rest of the text when the row ends without a stop string. */
  flush(): string {
    if (!this.decoder || this.finalText !== undefined) return '';
    this.decoder.flush();
    this.finalText = this.decoder.decoded;
    const delta = this.finalText.slice(this.emitted);
    this.emitted = this.finalText.length;
    return delta;
  }

  get text(): string {
    return this.finalText ?? this.decoder?.decoded ?? '';
  }
}

/**
 * Streams generated tokens. Rows are independent: each gets the ids it would get alone (left padding, its own
 * positions and mask, its own RNG stream `seed + row`). Every tensor is released when the iterator ends,
 * also when the consumer stops early.
 */
export async function* generateStream(
  model: DecoderForCausalLM,
  input: GenerationInput,
  options: GenerationOptions = {},
  tokenizer?: TextTokenizer,
): AsyncGenerator<GenerationChunk, GenerationResult[], undefined> {
  const c = model.config;
  if ((input.inputIds === undefined) === (input.inputsEmbeds === undefined)) {
    throw new GenerationError('give exactly one of inputIds and inputsEmbeds', 'input');
  }
  let prefill: { inputIds?: number[][]; inputsEmbeds?: tf.Tensor3D; attentionMask: number[][] };
  let seen: number[][];
  let promptLength: number;
  if (input.inputIds) {
    const rows = input.inputIds.map((r) => [...r]);
    if (!rows.length || rows.some((r) => r.length === 0)) throw new GenerationError('every prompt needs at least one token', 'inputIds');
    const T = Math.max(...rows.map((r) => r.length));
    promptLength = T;
    const pad = c.padTokenId ?? 0;
    prefill = {
      inputIds: rows.map((r) => [...new Array<number>(T - r.length).fill(pad), ...r]),
      attentionMask: rows.map((r) => [...new Array<number>(T - r.length).fill(0), ...new Array<number>(r.length).fill(1)]),
    };
    seen = rows;
  } else {
    const e = input.inputsEmbeds!;
    const [B, T] = e.shape;
    const mask = input.attentionMask?.map((r) => [...r]) ?? Array.from({ length: B }, () => new Array<number>(T).fill(1));
    promptLength = T;
    prefill = { inputsEmbeds: e, attentionMask: mask };
    seen = input.promptIds?.map((r) => [...r]) ?? Array.from({ length: B }, () => []);
  }
  const B = prefill.attentionMask.length;
  const realLengths = prefill.attentionMask.map((r) => r.reduce((a, b) => a + (b ? 1 : 0), 0));
  const longest = Math.max(...realLengths);
  if (longest >= c.maxPositionEmbeddings) {
    throw new GenerationError(
      `the prompt has ${longest} tokens; the model's max_position_embeddings is ${c.maxPositionEmbeddings} (at least one position must stay for the answer)`,
      input.inputIds ? 'inputIds' : 'inputsEmbeds',
    );
  }
  const o: ResolvedGenerationOptions = resolveGenerationOptions(options, model.generationConfig, {
    eosTokenIds: c.eosTokenIds,
    promptLength,
    ...(tokenizer?.padTokenId !== undefined ? { padTokenId: tokenizer.padTokenId } : c.padTokenId !== undefined ? { padTokenId: c.padTokenId } : {}),
  });
  if (o.stopStrings.length && !tokenizer) throw new GenerationError('stop strings need a tokenizer', 'stopStrings');
  const eos = new Set(o.eosTokenIds);
  const rows = Array.from({ length: B }, () => new RowState(tokenizer, o.stopStrings));
  const rngs = Array.from({ length: B }, (_, b) => new SeededRandom(o.seed + b));
  const cache = model.createCache(B);
  try {
    let out = model.forward({ ...prefill, cache, logits: 1 });
    for (let step = 0; step < o.maxNewTokens; step++) {
      out.hiddenStates.dispose();
      const logits = out.logits!.dataSync() as Float32Array;
      out.logits!.dispose();
      const V = c.vocabSize;
      const next: number[] = [];
      const chunks: GenerationChunk[] = [];
      for (let b = 0; b < B; b++) {
        const r = rows[b]!;
        if (r.finish) {
          next.push(o.padTokenId);
          continue;
        }
        const id = selectToken(logits.subarray(b * V, (b + 1) * V), [...seen[b]!, ...r.ids], o, rngs[b]!);
        next.push(id);
        let text = '';
        if (eos.has(id)) {
          r.ids.push(id);
          r.finish = 'eos';
          text = r.flush();
        } else {
          const res = r.push(id);
          text = res.text;
          if (res.stopped) r.finish = 'stop';
          else if (r.ids.length >= o.maxNewTokens || realLengths[b]! + r.ids.length >= c.maxPositionEmbeddings) {
            r.finish = 'length';
            text += r.flush();
          }
        }
        chunks.push({ row: b, tokenId: id, text, ...(r.finish ? { finishReason: r.finish } : {}) });
      }
      for (const ch of chunks) yield ch;
      if (rows.every((r) => r.finish) || step + 1 >= o.maxNewTokens) break;
      out = model.forward({ inputIds: next.map((id) => [id]), cache, logits: 1 });
    }
    return rows.map((r) => ({ ids: r.ids, text: r.text, finishReason: r.finish ?? 'length' }));
  } finally {
    cache.dispose();
  }
}

/** Runs {@link generateStream} to the end and returns each row's result. */
export async function generate(
  model: DecoderForCausalLM,
  input: GenerationInput,
  options: GenerationOptions = {},
  tokenizer?: TextTokenizer,
): Promise<GenerationResult[]> {
  const it = generateStream(model, input, options, tokenizer);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}
