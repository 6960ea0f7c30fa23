/**
 * Resume after SIGKILL: a run killed right after a checkpoint, then resumed with `resume_from_checkpoint: true`,
 * ends with parameters and optimizer state identical, byte for byte, to an uninterrupted run's. Also Ctrl-C
 * (SIGINT) through the CLI, which saves a checkpoint and exits 130. Runs the built CLI in child processes.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { tempDir } from '../../llm/test/helpers.js';
import { baseConfig, dataset, GOLDEN_SAMPLE, startCli, tinyCheckpoint, writeYaml } from './helpers.js';

const SAMPLES = [
  GOLDEN_SAMPLE,
  { text: 'A deep field <|reserved_special_token_0|> of galaxies.', modalities: [{ type: 'image', value: 'hubble_deep_field.jpg' }] },
  { conversations: [{ role: 'user', content: 'Describe <|reserved_special_token_0|>' }, { role: 'assistant', content: 'Stars and galaxies.' }], modalities: [{ type: 'image', value: 'hubble_deep_field.jpg' }] },
];
const ARGS = { max_steps: 7, save_steps: 2, per_device_train_batch_size: 2, gradient_accumulation_steps: 1, lr_scheduler_type: 'cosine', warmup_steps: 1, weight_decay: 0.1 };

let ckpt: string;
let data: string;
beforeAll(async () => {
  ckpt = await tinyCheckpoint();
  data = await dataset(SAMPLES);
});

async function files(dir: string): Promise<Record<string, Buffer>> {
  const out: Record<string, Buffer> = {};
  for (const f of ['model.safetensors', 'optimizer.safetensors']) out[f] = await fs.readFile(path.join(dir, f));
  return out;
}

it('a run SIGKILLed after checkpoint-4 and resumed ends byte-identical to an uninterrupted run', async () => {
  const root = await tempDir('mm-train-resume-');
  const plain = await writeYaml(root, baseConfig(ckpt, data, path.join(root, 'a'), ARGS), 'a.yaml');
  const a = await startCli(['train', '--config', plain, '--progress', 'json']).done;
  expect(a.code).toBe(0);

  const killedYaml = await writeYaml(root, baseConfig(ckpt, data, path.join(root, 'b'), ARGS), 'b.yaml');
  const b = startCli(['train', '--config', killedYaml, '--progress', 'json']);
  let seen = '';
  b.child.stderr!.on('data', (d: Buffer) => {
    seen += d.toString();
    if (seen.includes('checkpoint-4"')) b.child.kill('SIGKILL');
  });
  const killed = await b.done;
  expect(killed.signal).toBe('SIGKILL');
  const left = await fs.readdir(path.join(root, 'b'));
  expect(left).toContain('checkpoint-4');
  expect(left).not.toContain('checkpoint-7');

  const resumeYaml = await writeYaml(root, baseConfig(ckpt, data, path.join(root, 'b'), ARGS, { resume_from_checkpoint: true }), 'b2.yaml');
  const resumed = await startCli(['train', '--config', resumeYaml, '--progress', 'json']).done;
  expect(resumed.code).toBe(0);
  expect(resumed.stderr).toMatch(/"type":"resume","dir":"[^"]*checkpoint-[46]","step":[46]/);

  const fa = await files(path.join(root, 'a', 'checkpoint-7'));
  const fb = await files(path.join(root, 'b', 'checkpoint-7'));
  expect(fb['model.safetensors']!.equals(fa['model.safetensors']!)).toBe(true);
  expect(fb['optimizer.safetensors']!.equals(fa['optimizer.safetensors']!)).toBe(true);
  const sa = JSON.parse(await fs.readFile(path.join(root, 'a', 'checkpoint-7', 'trainer_state.json'), 'utf8'));
  const sb = JSON.parse(await fs.readFile(path.join(root, 'b', 'checkpoint-7', 'trainer_state.json'), 'utf8'));
  expect(sb.log_history.map((e: { loss?: number }) => e.loss)).toEqual(sa.log_history.map((e: { loss?: number }) => e.loss));
  // the plots are drawn at every save and at the end
  expect(await fs.readdir(path.join(root, 'a'))).toEqual(expect.arrayContaining(['training_curves.png', 'training_curves.svg', 'metrics.jsonl']));
}, 300_000);

it('Ctrl-C (SIGINT) saves a checkpoint at the current step and exits 130', async () => {
  const root = await tempDir('mm-train-sigint-');
  const yaml = await writeYaml(root, baseConfig(ckpt, data, path.join(root, 'c'), { ...ARGS, max_steps: 50, save_steps: 1000 }), 'c.yaml');
  const c = startCli(['train', '--config', yaml, '--progress', 'json']);
  let seen = '';
  let sent = false;
  c.child.stderr!.on('data', (d: Buffer) => {
    seen += d.toString();
    if (!sent && seen.includes('"type":"step"')) {
      sent = true;
      c.child.kill('SIGINT');
    }
  });
  const r = await c.done;
  expect(r.code).toBe(130);
  const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
  expect(summary.stopped).toBe(true);
  expect(await fs.readdir(path.join(root, 'c'))).toContain(`checkpoint-${summary.global_step}`);
}, 300_000);
