/**
 * `TextTokenizer`: a Hugging Face `tokenizer.json` (through `@huggingface/tokenizers`) with its
 * `tokenizer_config.json` special tokens and chat template (rendered with `@huggingface/jinja`), plus an
 * incremental decoder for streaming that never splits a UTF-8 character.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelLoadError, MultimeditronError, readJsonFile, templateFromConfig, tokenString, type TokenizerConfigJSON } from '@multimeditron/core';

/** One chat message. */
export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

/** Options of {@link TextTokenizer.applyChatTemplate}. */
export interface ChatTemplateOptions {
  /** End with the assistant header (default true). */
  addGenerationPrompt?: boolean;
  /** Passed to the template as `enable_thinking` (Qwen3); omitted when undefined. */
  enableThinking?: boolean;
  /** Extra template variables. */
  variables?: Record<string, unknown>;
}

/** A tokenizer with its special tokens and chat template. */
export class TextTokenizer {
  private readonly template: Template | undefined;
  private readonly specialVars: Record<string, string> = {};

  constructor(
    /** The underlying `@huggingface/tokenizers` tokenizer. */
    readonly tokenizer: Tokenizer,
    /** `tokenizer_config.json` content. */
    readonly config: TokenizerConfigJSON = {},
    chatTemplate?: string,
    /** Where it was read from (for messages). */
    readonly source = '<tokenizer>',
  ) {
    const template = chatTemplate ?? templateFromConfig(config.chat_template);
    this.template = template ? new Template(template) : undefined;
    for (const k of ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const) {
      const v = tokenString(config[k]);
      if (v !== undefined) this.specialVars[k] = v;
    }
  }

  /** Whether a folder holds a `tokenizer.json`. */
  static async existsIn(dir: string): Promise<boolean> {
    return fs.access(path.join(dir, 'tokenizer.json')).then(() => true, () => false);
  }

  /**
   * Reads `tokenizer.json`, and when present `tokenizer_config.json` and the chat template of
   * `chat_template.jinja` or `chat_template.json` (newer transformers write it there), which win over the
   * config's `chat_template`.
   */
  static async fromFolder(dir: string): Promise<TextTokenizer> {
    const tj = path.join(dir, 'tokenizer.json');
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const jinja = path.join(dir, 'chat_template.jinja');
    const json = await readJsonFile(tj);
    const exists = (f: string) => fs.access(f).then(() => true, () => false);
    const config = (await exists(cfgFile)) ? ((await readJsonFile(cfgFile)) as TokenizerConfigJSON) : {};
    const jsonTemplate = path.join(dir, 'chat_template.json');
    let template = (await exists(jinja)) ? await fs.readFile(jinja, 'utf8') : undefined;
    if (template === undefined && (await exists(jsonTemplate))) {
      const t = (await readJsonFile(jsonTemplate)) as { chat_template?: unknown };
      if (typeof t?.chat_template !== 'string') throw new ModelLoadError(jsonTemplate, 'has no "chat_template" string');
      template = t.chat_template;
    }
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(json as object, config);
    } catch (e) {
      throw new ModelLoadError(tj, `not a usable tokenizer.json: ${(e as Error).message}`, undefined, { cause: e });
    }
    return new TextTokenizer(tok, config, template, dir);
  }

  /** Token ids of `text` (with the tokenizer's special tokens, e.g. BOS, unless `addSpecialTokens` is false). */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** Text of `ids` (special tokens skipped by default). */
  decode(ids: readonly number[], skipSpecialTokens = true): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: skipSpecialTokens });
  }

  /** The id of a token string, if it is in the vocabulary. */
  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token) ?? undefined;
  }

  /** Whether a chat template is available. */
  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  /** Renders messages with the chat template (`apply_chat_template(..., tokenize=False)`). */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!this.template) {
      throw new MultimeditronError('E_CHAT_TEMPLATE', `${this.source}: the tokenizer has no chat_template; use a plain prompt instead of messages`);
    }
    return this.template.render({
      ...this.specialVars,
      ...(options.variables ?? {}),
      ...(options.enableThinking === undefined ? {} : { enable_thinking: options.enableThinking }),
      messages: messages as unknown as Record<string, unknown>[],
      add_generation_prompt: options.addGenerationPrompt ?? true,
    } as Record<string, unknown>);
  }

  /** The eos token id of tokenizer_config.json, if any. */
  get eosTokenId(): number | undefined {
    const t = tokenString(this.config.eos_token);
    return t === undefined ? undefined : this.tokenToId(t);
  }

  /** The pad token id of tokenizer_config.json, if any. */
  get padTokenId(): number | undefined {
    const t = tokenString(this.config.pad_token);
    return t === undefined ? undefined : this.tokenToId(t);
  }
}

/**
 * Turns a growing list of ids into text deltas. A delta is only emitted once the text decoded so far no
 * longer ends in an incomplete UTF-8 sequence (shown by decoders as U+FFFD), so a multi-byte character split
 * across tokens is never cut.
 */
export class StreamingDecoder {
  private readonly ids: number[] = [];
  private emitted = 0;
  private text = '';

  constructor(private readonly tokenizer: TextTokenizer) {}

  /** Adds a token; returns the new complete text (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids);
    if (text.endsWith('\uFFFD')) return '';
    this.text = text;
    const delta = text.slice(this.emitted);
    this.emitted = text.length;
    return delta;
  }

  /** Everything decoded so far (complete characters). */
  get decoded(): string {
    return this.text;
  }

  /** Flushes what is left at the end (including a dangling U+FFFD of a truly invalid sequence). */
  flush(): string {
    const text = this.tokenizer.decode(this.ids);
    const delta = text.slice(this.emitted);
    this.emitted = text.length;
    this.text = text;
    return delta;
  }
}
