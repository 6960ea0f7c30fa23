/**
 * `multimeditron generate <model> (--prompt TEXT | --messages FILE.json) [--image PATH]... [--audio PATH]...
 * [--greedy | --temperature T --top-p P --top-k K --min-p P --seed S] [--max-new-tokens N] [--no-thinking]
 * [--stream] [--json]`: answers a prompt with a plain language-model folder or a MultiMeditron checkpoint.
 * `--prompt` is encoded with the tokenizer's special tokens; `--messages` is rendered with the chat template and
 * the generation prompt, then encoded without special tokens. Attachments fill the placeholders in the order
 * given. `--json` prints `{promptIds, ids, text, finishReason}` on the last line of stdout.
 * @module
 */
import path from 'node:path';
import type { Command } from 'commander';
import { MultimeditronError, readJsonFile } from '@multimeditron/core';
import {
  AutoLanguageModel, defaultLanguageModelRegistry, generateStream, MultiMeditronModel, TextTokenizer,
  type Attachment, type ChatMessage, type GenerationChunk, type GenerationOptions, type MultiMeditronGenerateResult,
} from '@multimeditron/llm';
import { createHost, type HostOptions } from '../host.js';
import { CliExit, EXIT_OK, EXIT_USAGE } from '../errors.js';

/** Options of the generate command. */
export interface GenerateCommandOptions extends HostOptions {
  prompt?: string;
  messages?: string;
  greedy?: boolean;
  temperature?: string;
  topP?: string;
  topK?: string;
  minP?: string;
  repetitionPenalty?: string;
  seed?: string;
  maxNewTokens?: string;
  stop?: string[];
  thinking?: boolean;
  stream?: boolean;
  json?: boolean;
}

/** Error codes that mean "the model, the request or a flag is wrong" (exit 2), not a failed input. */
const USAGE_CODES = new Set(['E_MODEL', 'E_SAFETENSORS', 'E_GENERATION', 'E_UNKNOWN_MODEL_TYPE', 'E_CHAT_TEMPLATE', 'E_CONFIG', 'E_RESOLVE', 'E_UNKNOWN']);

function number(flag: string, v: string | undefined, integer = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new CliExit(EXIT_USAGE, `${flag} must be ${integer ? 'an integer' : 'a number'}, got ${JSON.stringify(v)}`);
  return n;
}

/** The generation options the flags ask for (undefined fields fall back to generation_config.json). */
export function generationOptionsFromFlags(o: GenerateCommandOptions): GenerationOptions {
  const sampling = {
    temperature: number('--temperature', o.temperature),
    topP: number('--top-p', o.topP),
    topK: number('--top-k', o.topK, true),
    minP: number('--min-p', o.minP),
    seed: number('--seed', o.seed, true),
  };
  const given = Object.entries(sampling).filter(([, v]) => v !== undefined).map(([k]) => k);
  if (o.greedy && given.some((k) => k !== 'seed')) throw new CliExit(EXIT_USAGE, '--greedy cannot be combined with --temperature, --top-p, --top-k or --min-p');
  const out: GenerationOptions = {};
  for (const [k, v] of Object.entries(sampling)) if (v !== undefined) (out as Record<string, number>)[k] = v;
  if (o.greedy) out.doSample = false;
  else if (given.some((k) => k !== 'seed')) out.doSample = true;
  const maxNew = number('--max-new-tokens', o.maxNewTokens, true);
  if (maxNew !== undefined) out.maxNewTokens = maxNew;
  const rep = number('--repetition-penalty', o.repetitionPenalty);
  if (rep !== undefined) out.repetitionPenalty = rep;
  if (o.stop?.length) out.stopStrings = o.stop;
  return out;
}

async function readMessages(file: string): Promise<ChatMessage[]> {
  const json = (await readJsonFile(file)) as unknown;
  const list = Array.isArray(json) ? json : (json as { messages?: unknown })?.messages;
  if (!Array.isArray(list) || !list.every((m) => m && typeof m.role === 'string' && typeof m.content === 'string')) {
    throw new CliExit(EXIT_USAGE, `${file}: must hold a JSON array of {"role", "content"} messages (or {"messages": [...]})`);
  }
  return list as ChatMessage[];
}

/** Runs the command; returns the result. Writes to `out` (default stdout). */
export async function runGenerate(
  modelArg: string,
  opts: GenerateCommandOptions,
  attachments: Attachment[],
  out: NodeJS.WritableStream = process.stdout,
): Promise<MultiMeditronGenerateResult> {
  if ((opts.prompt === undefined) === (opts.messages === undefined)) throw new CliExit(EXIT_USAGE, 'give exactly one of --prompt and --messages');
  const gen = generationOptionsFromFlags(opts);
  const messages = opts.messages ? await readMessages(opts.messages) : undefined;
  const request = {
    ...(messages ? { messages } : { text: opts.prompt! }),
    ...(opts.thinking === false ? { enableThinking: false } : {}),
  };
  const { mm } = await createHost(opts);
  const dir = await mm.resolver.resolve(modelArg);
  let stream: AsyncGenerator<GenerationChunk, MultiMeditronGenerateResult, undefined>;
  let release: () => void;
  if (await MultiMeditronModel.isCheckpoint(dir)) {
    const model = await MultiMeditronModel.fromPretrained(dir, { mm });
    release = () => model.dispose();
    stream = model.stream({ ...request, ...gen, modalities: attachments });
  } else {
    if (attachments.length) throw new CliExit(EXIT_USAGE, `${dir} is a plain language model (config.json model_type is not "multimodal"): it takes no --image/--audio`);
    const registry = defaultLanguageModelRegistry();
    registry.addFromPlugins(mm);
    const llm = await AutoLanguageModel.fromPretrained(dir, { resolver: mm.resolver, registry });
    release = () => llm.dispose();
    if (!(await TextTokenizer.existsIn(dir))) {
      release();
      throw new CliExit(EXIT_USAGE, `${dir} has no tokenizer.json`);
    }
    const tok = await TextTokenizer.fromFolder(dir);
    const promptIds = messages
      ? tok.encode(tok.applyChatTemplate(messages, { addGenerationPrompt: true, ...(request.enableThinking === false ? { enableThinking: false } : {}) }), false)
      : tok.encode(opts.prompt!, true);
    stream = (async function* () {
      const it = generateStream(llm, { inputIds: [promptIds] }, gen, tok);
      for (;;) {
        const r = await it.next();
        if (r.done) return { promptIds, ...r.value[0]! };
        yield r.value;
      }
    })();
  }
  try {
    for (;;) {
      const r = await stream.next();
      if (r.done) {
        const result = r.value;
        if (opts.stream) out.write('\n');
        else if (!opts.json) out.write(`${result.text}\n`);
        if (opts.json) out.write(`${JSON.stringify({ promptIds: result.promptIds, ids: result.ids, text: result.text, finishReason: result.finishReason })}\n`);
        return result;
      }
      if (opts.stream && r.value.text) out.write(r.value.text);
    }
  } finally {
    release();
  }
}

/** Registers `generate`. */
export function registerGenerate(program: Command): void {
  const attachments: Attachment[] = [];
  const collect = (type: string) => (value: string, prev: string[] = []) => {
    attachments.push({ type, value: path.resolve(value) });
    return [...prev, value];
  };
  program
    .command('generate')
    .description('answer a prompt with a language model folder or a MultiMeditron checkpoint (images and audio fill the placeholders in order)')
    .argument('<model>', 'a model folder or hub id: a plain LLM (llama, qwen3, ...) or a MultiMeditron checkpoint (model_type "multimodal")')
    .option('--prompt <text>', 'a plain prompt, encoded with the tokenizer\'s special tokens (BOS where it adds one)')
    .option('--messages <file.json>', 'chat messages [{"role","content"}], rendered with the chat template and the generation prompt')
    .option('--image <path>', 'an image for the next placeholder (repeatable)', collect('image'))
    .option('--audio <path>', 'an audio file for the next placeholder (repeatable)', collect('audio'))
    .option('--greedy', 'pick the most likely token (no sampling)')
    .option('--temperature <t>', 'sample with this temperature')
    .option('--top-p <p>', 'nucleus sampling')
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)')
    .option('--min-p <p>', 'drop tokens below p x the top probability')
    .option('--repetition-penalty <r>', 'penalise tokens already present (> 1)')
    .option('--seed <s>', 'seed of the sampler')
    .option('--max-new-tokens <n>', 'most new tokens (default: generation_config.json, else 256)')
    .option('--stop <string>', 'stop when this text appears (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--no-thinking', 'pass enable_thinking=false to the chat template (Qwen3)')
    .option('--stream', 'print the text as it is generated')
    .option('--json', 'print {"promptIds","ids","text","finishReason"} as one JSON line at the end')
    .option('--plugins <list>', 'comma-separated plugin packages (default: discovered)')
    .option('--backend <name>', 'tfjs backend: tensorflow, wasm or cpu')
    .action(async (model: string, opts: GenerateCommandOptions) => {
      try {
        await runGenerate(model, opts, attachments);
        process.exitCode = EXIT_OK;
      } catch (e) {
        if (e instanceof MultimeditronError && USAGE_CODES.has(e.code)) {
          const err = new CliExit(EXIT_USAGE, e.message);
          (err as CliExit & { suggestions?: string[] }).suggestions = e.suggestions;
          throw err;
        }
        throw e;
      }
    });
}

