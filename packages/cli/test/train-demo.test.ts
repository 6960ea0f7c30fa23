/**
 * The built-in default: examples/demo/train.yaml (a short ALIGNMENT run on the demo data and model) through the
 * built CLI, with only its output folder moved to a temporary one. Every step sees the same three samples
 * (gradient accumulation over the whole demo set), so the loss must go down: an overfit test.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { parse, stringify } from 'yaml';
import { REPO_ROOT } from '../../../test/helpers/fixtures.js';
import { runCli } from './helpers.js';

const DEMO = path.join(REPO_ROOT, 'examples', 'demo');

test('examples/demo/train.yaml: 30 ALIGNMENT steps, the loss goes down, checkpoints and plots are written', async () => {
  const gen = spawnSync(process.execPath, [path.join(REPO_ROOT, 'examples', 'make-demo-models.mjs'), '--if-missing'], { encoding: 'utf8' });
  expect(gen.status).toBe(0);
  const out = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-train-demo-'));
  const config = parse(await fs.readFile(path.join(DEMO, 'train.yaml'), 'utf8')) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const abs = (p: string) => path.resolve(DEMO, p);
  config['base_llm'] = abs(config['base_llm']);
  config['base_model'] = abs(config['base_model']);
  config['datasets'] = config['datasets'].map((d: { packed_path: string }) => ({ packed_path: abs(d.packed_path) }));
  config['training_args']['output_dir'] = path.join(out, 'run');
  const yaml = path.join(out, 'train.yaml');
  await fs.writeFile(yaml, stringify(config));

  const r = runCli(['train', '--config', yaml, '--progress', 'json'], { timeout: 400_000 });
  expect(r.status).toBe(0);
  expect(r.stderr).toContain('ignored (PyTorch-only, no effect here): training_args.bf16, training_args.report_to');
  const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
  expect(summary.global_step).toBe(30);
  const run = path.join(out, 'run');
  const state = JSON.parse(await fs.readFile(path.join(run, 'checkpoint-30', 'trainer_state.json'), 'utf8'));
  const losses: number[] = state.log_history.filter((e: { loss?: number }) => e.loss !== undefined).map((e: { loss: number }) => e.loss);
  expect(losses).toHaveLength(30);
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  // the last five steps are well below the first five, and the loss falls almost every step on a fixed batch
  expect(mean(losses.slice(-5))).toBeLessThan(mean(losses.slice(0, 5)) - 1);
  const drops = losses.slice(1).filter((l, i) => l <= losses[i]! + 1e-6).length;
  expect(drops).toBeGreaterThanOrEqual(25);
  for (const f of ['training_curves.png', 'training_curves.svg', 'metrics.jsonl']) expect((await fs.stat(path.join(run, f))).size).toBeGreaterThan(100);
  // the frozen CLIP ran once per image: 4 images, 30 steps x 3 samples
  expect(summary.feature_cache.misses).toBe(4);
  // the trained checkpoint answers through `generate`
  const g = runCli(['generate', path.join(run, 'checkpoint-30'), '--prompt', '<|reserved_special_token_0|> Describe.', '--image', path.join(DEMO, 'images', 'retina.jpg'), '--greedy', '--max-new-tokens', '4', '--json']);
  expect(g.status).toBe(0);
  expect(JSON.parse(g.stdout.trim().split('\n').pop()!).ids.length).toBeGreaterThan(0);
}, 600_000);
