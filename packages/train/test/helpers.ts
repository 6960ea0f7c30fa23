/** Shared by the trainer tests: a tiny MultiMeditron checkpoint and dataset built from the fixtures. */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { stringify } from 'yaml';
import { IMAGES, tempDir, writeTinyCheckpoint } from '../../llm/test/helpers.js';
import { REPO_ROOT } from '../../../test/helpers/fixtures.js';

export const CLI_BIN = path.join(REPO_ROOT, 'packages', 'cli', 'bin', 'multimeditron.js');

/**
 * A Llama 3 chat template without the default system block (what the golden alignment step renders):
 * `<|begin_of_text|>` then one header + content + `<|eot_id|>` per turn.
 */
export const PLAIN_LLAMA3_TEMPLATE = "{{- bos_token }}{%- for m in messages %}{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

/** The golden alignment sample (retina + one question and answer). */
export const GOLDEN_SAMPLE = {
  conversations: [
    { role: 'user', content: '<|reserved_special_token_0|>\nWhat is shown in this image?' },
    { role: 'assistant', content: 'A fundus photo of an eye.' },
  ],
  modalities: [{ type: 'image', value: 'retina.jpg' }],
};

/** A tiny MultiMeditron checkpoint (llama-tiny + clip-tiny + projector-tiny, the plain template) in a new folder. */
export async function tinyCheckpoint(): Promise<string> {
  const dir = path.join(await tempDir('mm-train-ckpt-'), 'tiny');
  await writeTinyCheckpoint(dir, { projectorForm: 'projection' });
  await fs.writeFile(path.join(dir, 'chat_template.jinja'), PLAIN_LLAMA3_TEMPLATE);
  return dir;
}

/** A dataset folder with the fixture images and the given JSONL lines (objects, or raw strings for bad lines). */
export async function dataset(lines: Array<object | string>): Promise<string> {
  const dir = await tempDir('mm-train-data-');
  for (const f of ['retina.jpg', 'hubble_deep_field.jpg']) await fs.copyFile(path.join(IMAGES, f), path.join(dir, f));
  await fs.writeFile(path.join(dir, 'data.jsonl'), `${lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n')}\n`);
  return path.join(dir, 'data.jsonl');
}

/** Writes a training YAML and returns its path. */
export async function writeYaml(dir: string, config: object, name = 'train.yaml'): Promise<string> {
  const file = path.join(dir, name);
  await fs.writeFile(file, stringify(config));
  return file;
}

/** A base config for the tiny checkpoint. */
export function baseConfig(ckpt: string, data: string, outputDir: string, args: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    base_llm: ckpt,
    base_model: ckpt,
    attachment_token: '<|reserved_special_token_0|>',
    tokenizer_type: 'llama',
    token_size: 64,
    modalities: [],
    training_mode: 'ALIGNMENT',
    datasets: [{ packed_path: data }],
    training_args: {
      output_dir: outputDir,
      learning_rate: 1e-3,
      per_device_train_batch_size: 1,
      max_steps: 4,
      lr_scheduler_type: 'constant',
      logging_steps: 1,
      save_steps: 2,
      seed: 7,
      ...args,
    },
    ...top,
  };
}

/** Starts the built CLI; the caller waits for it. */
export function startCli(args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> } {
  const env: NodeJS.ProcessEnv = { ...process.env, MULTIMEDITRON_BACKEND: 'wasm' };
  delete env['NODE_OPTIONS'];
  const child = spawn(process.execPath, [CLI_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, done };
}
