import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { readSafetensors } from '@multimeditron/core';
import { REPO_ROOT } from '../../../test/helpers/fixtures.js';
import { runCli } from './helpers.js';

const GOLDEN_LLM = path.join(REPO_ROOT, 'test', 'fixtures', 'golden-llm');
const TOKENIZER = path.join(REPO_ROOT, 'node_modules', '@lenml', 'tokenizer-llama3_1', 'models');

let tmp: string;
let llama: string;

const lastJson = (stdout: string) => JSON.parse(stdout.trim().split('\n').pop()!);

async function expectedIds(file: string, c: string): Promise<{ prompt: number[]; generated: number[] }> {
  const t = (await readSafetensors(path.join(GOLDEN_LLM, 'expected', file))).tensors;
  const ids = Array.from(t.get(`${c}.input_ids`)!.data as BigInt64Array, Number);
  const gen = Array.from(t.get(`${c}.generated_ids`)!.data as BigInt64Array, Number);
  return { prompt: ids, generated: gen };
}

/** The greedy ids up to and including the first eos, as generate stops there. */
function untilEos(ids: number[], eos: number[]): number[] {
  const i = ids.findIndex((x) => eos.includes(x));
  return i < 0 ? ids : ids.slice(0, i + 1);
}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-generate-'));
  llama = path.join(tmp, 'llama-tiny');
  await fs.mkdir(llama);
  for (const f of await fs.readdir(path.join(GOLDEN_LLM, 'llama-tiny'))) await fs.copyFile(path.join(GOLDEN_LLM, 'llama-tiny', f), path.join(llama, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await fs.copyFile(path.join(TOKENIZER, f), path.join(llama, f));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

describe('multimeditron generate', () => {
  test('--prompt on a plain Llama folder: BOS added, greedy ids of the fixture, one JSON line', async () => {
    const { prompt, generated } = await expectedIds('llama-tiny.safetensors', 'plain');
    const r = runCli(['generate', llama, '--prompt', 'The quick brown fox jumps over the lazy dog.', '--greedy', '--max-new-tokens', '8', '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = lastJson(r.stdout);
    expect(out.promptIds).toEqual(prompt);
    expect(out.ids).toEqual(untilEos(generated, [128001, 128008, 128009]));
    expect(typeof out.text).toBe('string');
    expect(['eos', 'length']).toContain(out.finishReason);
  });

  test('--messages --no-thinking on Qwen3: the chat template with the generation prompt, no special tokens added', async () => {
    const { prompt, generated } = await expectedIds('qwen3-tiny.safetensors', 'chat');
    const msgs = path.join(tmp, 'chat.json');
    await fs.writeFile(msgs, JSON.stringify([
      { role: 'system', content: 'You are a careful clinical assistant.' },
      { role: 'user', content: 'List two causes of chest pain.' },
    ]));
    const r = runCli(['generate', path.join(GOLDEN_LLM, 'qwen3-tiny'), '--messages', msgs, '--no-thinking', '--greedy', '--max-new-tokens', '12', '--json']);
    expect(r.status).toBe(0);
    const out = lastJson(r.stdout);
    expect(out.promptIds).toEqual(prompt);
    expect(out.ids).toEqual(untilEos(generated, [151645, 151643]));
  });

  test('--stream prints the text as it comes, then the JSON line; sampling with a seed is reproducible', () => {
    const args = ['generate', path.join(GOLDEN_LLM, 'qwen3-tiny'), '--prompt', 'Radiology reports', '--temperature', '0.9', '--top-k', '40', '--top-p', '0.95', '--seed', '5', '--max-new-tokens', '6', '--stream', '--json'];
    const a = runCli(args);
    const b = runCli(args);
    expect(a.status).toBe(0);
    const out = lastJson(a.stdout);
    expect(lastJson(b.stdout)).toEqual(out);
    const streamed = a.stdout.trim().split('\n').slice(0, -1).join('\n');
    expect(streamed).toBe(out.text);
  });

  test('usage errors exit 2 with a message', () => {
    const q = path.join(GOLDEN_LLM, 'qwen3-tiny');
    for (const [args, msg] of [
      [['--greedy', '--temperature', '0.5', '--prompt', 'x'], /--greedy cannot be combined/],
      [[], /exactly one of --prompt and --messages/],
      [['--prompt', 'x', '--image', 'a.png'], /plain language model.*no --image/],
      [['--prompt', 'x', '--max-new-tokens', '0'], /maxNewTokens/],
    ] as const) {
      const r = runCli(['generate', q, ...args]);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(msg);
    }
    const missing = runCli(['generate', path.join(tmp, 'nope'), '--prompt', 'x'], { env: { HF_HUB_OFFLINE: '1' } });
    expect(missing.status).toBe(2);
  });

  test('on the demo MultiMeditron checkpoint: an image and an audio file fill the placeholders in order', async () => {
    const gen = spawnSync(process.execPath, [path.join(REPO_ROOT, 'examples', 'make-demo-models.mjs'), '--if-missing'], { encoding: 'utf8' });
    expect(gen.status).toBe(0);
    const ckpt = path.join(REPO_ROOT, 'examples', 'demo', 'models', 'multimeditron-demo');
    const img = path.join(REPO_ROOT, 'examples', 'demo', 'images', 'chest_xray.png');
    const wav = path.join(REPO_ROOT, 'examples', 'demo', 'audio', 'heartbeat_16k.wav');
    const text = '<|reserved_special_token_0|> and <|reserved_special_token_0|>: describe.';
    const r = runCli(['generate', ckpt, '--prompt', text, '--image', img, '--audio', wav, '--greedy', '--max-new-tokens', '4', '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = lastJson(r.stdout);
    expect(out.promptIds.filter((x: number) => x === 128002)).toHaveLength(2);
    expect(out.ids).toHaveLength(4);
    // audio first then image is another prompt: the order matters (different embeddings in the slots)
    const swapped = runCli(['generate', ckpt, '--prompt', text, '--audio', wav, '--image', img, '--greedy', '--max-new-tokens', '4', '--json']);
    expect(swapped.status).toBe(0);
    // too many attachments: a typed error before any compute, exit 2
    const extra = runCli(['generate', ckpt, '--prompt', text, '--image', img, '--image', img, '--audio', wav]);
    expect(extra.status).toBe(2);
    expect(extra.stderr).toMatch(/2 placeholder\(s\).*3 attachment/);
    // an unreadable image names the file
    const bad = runCli(['generate', ckpt, '--prompt', '<|reserved_special_token_0|> x', '--image', path.join(REPO_ROOT, 'test', 'fixtures', 'golden', 'images', 'truncated.jpg')]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('truncated.jpg');
  });
});
