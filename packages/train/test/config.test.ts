/** The training YAML: the original's keys, HF defaults, ignored PyTorch-only keys, errors naming the YAML path. */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ConfigValidationError } from '@multimeditron/core';
import { createSchedule, decayGroups, clipGradNorm, parseTrainConfig, readTrainConfig } from '@multimeditron/train';
import * as tf from '@tensorflow/tfjs-core';
import { tempDir, useWasm } from '../../llm/test/helpers.js';

/** The original cookbook's stage-1 YAML (llama_clip/stage1_alignment.yaml), as it is. */
const STAGE1 = `base_llm: meta-llama/Llama-3.1-8B-Instruct
base_model: null
resume_from_checkpoint: false
wandb_run_id: null
attachment_token: <|reserved_special_token_0|>
tokenizer_type: llama
token_size: 4096

loaders:
  - loader_type: raw-image
    modality_type: image

modalities:
  - model_type: meditron_clip
    clip_name: openai/clip-vit-large-patch14
    hidden_size: 4096

training_mode: ALIGNMENT

datasets:
  - packed_path: $STORAGE_ROOT/llava_instruct
  - packed_path: \${STORAGE_ROOT}/pixmo_anything

training_args:
  output_dir: $MODEL_ROOT/freeze/single_clip/MultiMeditron-Llama-8B-Alignment-CLIP/
  dataloader_num_workers: 16
  dataloader_prefetch_factor: 4
  remove_unused_columns: false
  ddp_find_unused_parameters: false
  learning_rate: 1.0e-4
  bf16: true
  per_device_train_batch_size: 4
  gradient_accumulation_steps: 8
  num_train_epochs: 1
  gradient_checkpointing: true
  gradient_checkpointing_kwargs:
    use_reentrant: true
  save_strategy: steps
  save_steps: 0.25
  max_grad_norm: 1.0
  run_name: MultiMeditron-Llama-CLIP-8B-Alignment
  deepspeed: $WORKING_DIR/config/deepspeed.json
  accelerator_config:
    dispatch_batches: false
  lr_scheduler_type: "cosine_with_min_lr"
  lr_scheduler_kwargs:
    min_lr: 3.0e-5
  report_to: wandb
  logging_steps: 1
  weight_decay: 0.01
`;
const ENV = { STORAGE_ROOT: '/data', MODEL_ROOT: '/models', WORKING_DIR: '/work' };

async function yamlFile(text: string): Promise<string> {
  const f = path.join(await tempDir('mm-train-yaml-'), 'stage1.yaml');
  await fs.writeFile(f, text);
  return f;
}

async function issues(text: string): Promise<Array<{ path: string; rule: string }>> {
  try {
    await readTrainConfig(await yamlFile(text), { env: ENV, warn: () => {} });
  } catch (e) {
    if (e instanceof ConfigValidationError) return e.issues;
    throw e;
  }
  throw new Error('expected a ConfigValidationError');
}

describe('the training YAML', () => {
  it("reads the original's stage-1 YAML as it is, with one warning listing the ignored keys", async () => {
    const warnings: string[] = [];
    const c = await readTrainConfig(await yamlFile(STAGE1), { env: ENV, warn: (m) => warnings.push(m) });
    expect(c.base_llm).toBe('meta-llama/Llama-3.1-8B-Instruct');
    expect(c.base_model).toBeNull();
    expect(c.training_mode).toBe('ALIGNMENT');
    expect(c.datasets.map((d) => d.packed_path)).toEqual(['/data/llava_instruct', '/data/pixmo_anything']);
    expect(c.loaders).toEqual([{ loaderType: 'raw-image', modalityType: 'image' }]);
    expect(c.modalities[0]).toEqual({ model_type: 'meditron_clip', clip_name: 'openai/clip-vit-large-patch14', hidden_size: 4096 });
    const a = c.training_args;
    expect(a.output_dir).toBe('/models/freeze/single_clip/MultiMeditron-Llama-8B-Alignment-CLIP');
    expect([a.learning_rate, a.per_device_train_batch_size, a.gradient_accumulation_steps, a.num_train_epochs]).toEqual([1e-4, 4, 8, 1]);
    expect([a.save_strategy, a.save_steps, a.max_grad_norm, a.lr_scheduler_type, a.logging_steps, a.weight_decay]).toEqual(['steps', 0.25, 1, 'cosine_with_min_lr', 1, 0.01]);
    expect(a.lr_scheduler_kwargs).toEqual({ min_lr: 3e-5 });
    // HF defaults for what the YAML leaves out
    expect([a.optim, a.adam_beta1, a.adam_beta2, a.adam_epsilon, a.max_steps, a.warmup_steps, a.warmup_ratio, a.seed]).toEqual(['adamw_torch', 0.9, 0.999, 1e-8, -1, 0, 0, 42]);
    expect(warnings).toHaveLength(1);
    for (const k of ['wandb_run_id', 'training_args.bf16', 'training_args.deepspeed', 'training_args.gradient_checkpointing', 'training_args.report_to', 'training_args.dataloader_num_workers', 'training_args.dataloader_prefetch_factor']) {
      expect(warnings[0]).toContain(k);
    }
  });

  it('names the YAML path of an unknown key or a wrong type', async () => {
    expect(await issues(STAGE1.replace('  weight_decay: 0.01', '  weight_decay: 0.01\n  warmup_stepz: 3'))).toEqual([expect.objectContaining({ path: '/training_args/warmup_stepz', rule: 'additionalProperties' })]);
    expect(await issues(STAGE1.replace('learning_rate: 1.0e-4', 'learning_rate: fast'))).toEqual([expect.objectContaining({ path: '/training_args/learning_rate', rule: 'type' })]);
    expect(await issues(`${STAGE1}bogus_key: 1\n`)).toEqual([expect.objectContaining({ path: '/bogus_key' })]);
    expect(await issues(STAGE1.replace('training_mode: ALIGNMENT', 'training_mode: PRETRAIN'))).toEqual([expect.objectContaining({ path: '/training_mode', rule: 'enum' })]);
    expect(await issues(STAGE1.replace('optim: adamw_torch', '').replace('  weight_decay: 0.01', '  weight_decay: 0.01\n  optim: adafactor'))).toEqual([expect.objectContaining({ path: '/training_args/optim', rule: 'enum' })]);
    expect(await issues(STAGE1.replace('packed_path: $STORAGE_ROOT/llava_instruct', 'packed_path: $NOT_SET_ANYWHERE/x'))).toEqual([expect.objectContaining({ path: '/datasets/0/packed_path', rule: 'env' })]);
    const syntax = await issues('base_llm: [unclosed\n');
    expect(syntax[0]!.rule).toBe('yaml');
    expect(syntax[0]!.path).toMatch(/^line \d+, column \d+$/);
  });

  it('accepts the older `modalities: {config: {...}}` form and resume_from_checkpoint as a path', () => {
    const c = parseTrainConfig({
      base_llm: 'x', training_mode: 'end2end', datasets: [{ packed_path: 'd.jsonl' }], modalities: { config: { model_type: 'meditron_clip' } },
      resume_from_checkpoint: 'out/checkpoint-10', training_args: { output_dir: 'out' },
    }, { baseDir: '/base' });
    expect(c.training_mode).toBe('END2END');
    expect(c.modalities).toEqual([{ model_type: 'meditron_clip' }]);
    expect(c.resume_from_checkpoint).toBe('/base/out/checkpoint-10');
    expect(c.datasets[0]!.packed_path).toBe('/base/d.jsonl');
  });
});

describe('schedules, weight-decay groups and clipping', () => {
  it('follow transformers.get_scheduler', () => {
    const lin = createSchedule({ type: 'linear', baseLr: 1, totalSteps: 10, warmupSteps: 2 });
    expect([0, 1, 2, 6, 10].map((s) => lin.lrAt(s))).toEqual([0, 0.5, 1, 0.5, 0]);
    const cos = createSchedule({ type: 'cosine', baseLr: 2, totalSteps: 12, warmupSteps: 2 });
    expect(cos.lrAt(7)).toBeCloseTo(1, 12);
    expect(cos.lrAt(12)).toBeCloseTo(0, 12);
    const minLr = createSchedule({ type: 'cosine_with_min_lr', baseLr: 1e-4, totalSteps: 10, warmupSteps: 0, kwargs: { min_lr: 3e-5 } });
    expect(minLr.lrAt(0)).toBeCloseTo(1e-4, 15);
    expect(minLr.lrAt(10)).toBeCloseTo(3e-5, 15);
    expect(minLr.lrAt(5)).toBeCloseTo(6.5e-5, 15);
    expect(createSchedule({ type: 'constant', baseLr: 3, totalSteps: 10, warmupSteps: 5 }).lrAt(0)).toBe(3);
    expect(() => createSchedule({ type: 'cosine_with_min_lr', baseLr: 1, totalSteps: 2, warmupSteps: 0 })).toThrow(ConfigValidationError);
  });

  it('leave biases and norm weights out of weight decay', () => {
    const v = { variable: undefined as unknown as tf.Variable };
    const names = ['model.model.layers.0.input_layernorm.weight', 'model.model.norm.weight', 'model.model.layers.0.self_attn.q_norm.weight',
      'modalities_with_projection.0.feature_extractor.vision_model.pre_layrnorm.weight', 'modalities_with_projection.0.projector.projection.0.bias',
      'model.model.layers.0.mlp.up_proj.weight', 'modalities_with_projection.0.projector.projection.0.weight', 'model.model.embed_tokens.weight'];
    const groups = decayGroups(names.map((name) => ({ name, ...v })), 0.01);
    expect(groups[0]!.weightDecay).toBe(0.01);
    expect(groups[0]!.params.map((p) => p.name)).toEqual(names.slice(5));
    expect(groups[1]!.weightDecay).toBe(0);
    expect(groups[1]!.params.map((p) => p.name)).toEqual(names.slice(0, 5));
  });

  it('clip by global norm as torch.nn.utils.clip_grad_norm_', async () => {
    await useWasm();
    const grads = new Map<string, tf.Tensor>([['a', tf.tensor1d([3, 0])], ['b', tf.tensor1d([0, 4])]]);
    const n0 = tf.memory().numTensors;
    const { norm, grads: out } = clipGradNorm(grads, 1);
    expect(norm).toBeCloseTo(5, 6);
    expect(Array.from(out.get('a')!.dataSync())[0]).toBeCloseTo(3 / (5 + 1e-6), 6);
    expect(tf.memory().numTensors).toBe(n0);
    for (const g of out.values()) g.dispose();
  });
});
