/**
 * The trainer: MultiMeditron's training loop on one process, with the Hugging Face Trainer's bookkeeping.
 *
 * - Model: `base_model` (a MultiMeditron checkpoint) or a fresh model from `base_llm` and `modalities`; frozen as
 *   `training_mode` says ({@link applyTrainingMode}).
 * - Data: every `datasets[].packed_path` read once and validated (bad samples go to `errors.jsonl`), shuffled per
 *   epoch with a seeded generator (`seed + epoch`), cut into micro-batches of `per_device_train_batch_size`;
 *   `gradient_accumulation_steps` micro-batches make an optimizer step (the last, partial group of an epoch too).
 * - Step: per micro-batch the loss (HF causal-LM, divided by the accumulation steps) and its gradients; the sum
 *   is clipped by global norm, then AdamW/SGD with the scheduled learning rate.
 * - Frozen encoders (every mode but FULL) are run once per sample: their outputs are kept in a {@link FeatureCache}.
 * - Logs at `logging_steps` (`step`, `epoch`, `loss`, `grad_norm`, `learning_rate`, as HF writes `log_history`),
 *   `metrics.jsonl`, checkpoints at `save_steps` in the MultiMeditron layout with `trainer_state.json`, the
 *   optimizer and scheduler state and the data position, written atomically; `save_total_limit` removes the
 *   oldest. Resuming restores all of it, so the final parameters equal an uninterrupted run's byte for byte.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  Collator, ConfigValidationError, ConsoleLogger, createMultimeditron, ensureGradients, isHfDatasetDir, mergeEmbeddings, modalityValueKind, MultimeditronError,
  ModalityLoaderPool, openDataset, readSafetensors, writeSafetensors, type BaseModality, type CollatedBatch,
  type EncodedSample, type HostTensor, type LoaderSpec, type Logger, type Multimeditron, type Sample,
} from '@multimeditron/core';
import { MultiMeditronModel, SeededRandom, type MultiMeditronConfigJSON } from '@multimeditron/llm';
import { readTrainConfig, type TrainConfig } from './config.js';
import { FeatureCache } from './feature-cache.js';
import { causalLmLoss, lossTargets } from './loss.js';
import { writeTrainingPlots, type LogEntry as PlotLogEntry } from './plot.js';
import { applyTrainingMode, MODE_PARTS, type TrainingMode } from './modes.js';
import { AdamW, clipGradNorm, decayGroups, SGD, type NamedParameter, type Optimizer, type OptimizerState } from './optim.js';
import { createSchedule, type LrSchedule } from './schedule.js';

/** A training run failed (non-finite loss, no usable data, a bad checkpoint). */
export class TrainingError extends MultimeditronError {
  constructor(code: string, message: string, options: { cause?: unknown; suggestions?: string[] } = {}) {
    super(code, message, options);
  }
}

/** One entry of `log_history` (HF names); the trainer always writes the epoch. */
export interface LogEntry extends PlotLogEntry {
  epoch: number;
}

/** Progress after every optimizer step (for progress bars). */
export interface StepProgress {
  step: number;
  maxSteps: number;
  epoch: number;
  /** Loss of this step (mean of its micro-batch losses). */
  loss: number;
  learningRate: number;
  gradNorm: number;
  /** Real (unpadded) tokens of this step. */
  tokens: number;
  /** Tokens per second over the run so far (this process). */
  tokensPerSecond: number;
  /** Seconds left, estimated from the mean step time. */
  etaSeconds: number;
  /** Samples skipped so far because they failed to load, process or collate. */
  skippedSamples: number;
}

/** Options of {@link Trainer}. */
export interface TrainerOptions {
  /** The instance whose registries, loaders and plugins are used. Default: a new one (plugins discovered from the current folder). */
  mm?: Multimeditron;
  logger?: Logger;
  /** Called after every optimizer step. */
  onStep?: (p: StepProgress) => void;
  /** Called with each `log_history` entry. */
  onLog?: (entry: LogEntry) => void;
  /** Called when the run resumes from a checkpoint (before the first step). */
  onResume?: (info: { dir: string; step: number; epoch: number; microStep: number }) => void;
  /** Called after each checkpoint is written. */
  onSave?: (dir: string) => void;
  /** Stops the run at the next step boundary (a checkpoint is saved first). */
  signal?: AbortSignal;
  /** Memory bound of the feature cache in bytes (default 1 GiB; beyond it entries go to `output_dir/feature-cache/`). */
  featureCacheBytes?: number;
  /** Turn the feature cache off (for measurements). */
  featureCache?: boolean;
  /** Draws the loss / learning-rate plots (`training_curves.{png,svg}`) at every save and at the end. Default true. */
  plots?: boolean;
  /** Testing hook: called after each step with the step number (e.g. to kill the process mid-run). */
  afterStep?: (step: number) => void | Promise<void>;
}

/** What a finished (or stopped) run returns. */
export interface TrainResult {
  globalStep: number;
  maxSteps: number;
  /** Mean loss over the run's steps (HF `train_loss`). */
  trainLoss: number;
  logHistory: LogEntry[];
  /** Checkpoint folders written, oldest first (after `save_total_limit`). */
  checkpoints: string[];
  /** Samples skipped (load, process or collate errors; also listed in errors.jsonl). */
  skippedSamples: number;
  /** Whether the run was stopped early (signal). */
  stopped: boolean;
  /** Seconds of training. */
  runtime: number;
  featureCache: { hits: number; misses: number };
}

/** Names of the files of a trainer checkpoint beside the model files. */
export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const OPTIMIZER_STATE_FILE = 'optimizer.json';
export const SCHEDULER_FILE = 'scheduler.json';
export const TRAINING_CONFIG_FILE = 'training_config.json';
const CHECKPOINT_RE = /^checkpoint-(\d+)$/;
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja', 'chat_template.json'];

interface DataRecord {
  index: number;
  line: number;
  file: string;
  baseDir: string;
  sample: Sample;
}

/** Our resumable position and accumulators (`trainer_state.json` → `multimeditron`). */
interface StreamState {
  epoch: number;
  /** Micro-batches consumed in the current epoch. */
  micro_step: number;
  /** Loss summed since the last log, and the step it was last logged at (HF `tr_loss`, `_globalstep_last_logged`). */
  loss_since_log: number;
  last_logged_step: number;
  /** Sum of every step's loss (for `train_loss`). */
  total_loss: number;
  tokens_seen: number;
  skipped: number[];
}

/** HF `trainer_state.json`. */
interface TrainerStateJSON {
  global_step: number;
  max_steps: number;
  epoch: number;
  num_train_epochs: number;
  logging_steps: number;
  save_steps: number;
  train_batch_size: number;
  log_history: LogEntry[];
  best_metric: null;
  best_model_checkpoint: null;
  is_local_process_zero: true;
  is_world_process_zero: true;
  is_hyper_param_search: false;
  num_input_tokens_seen: number;
  total_flos: number;
  trial_name: null;
  trial_params: null;
  stateful_callbacks: Record<string, unknown>;
  multimeditron: StreamState & { mode: TrainingMode; seed: number; dataset_size: number };
}

const exists = (p: string) => fs.access(p).then(() => true, () => false);

/** The permutation of epoch `epoch`: Fisher-Yates with a generator seeded by `seed + epoch`. */
export function epochOrder(n: number, seed: number, epoch: number): number[] {
  const rng = new SeededRandom(seed + epoch);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** The last `checkpoint-<step>` folder of `dir` (undefined when there is none). */
export async function lastCheckpoint(dir: string): Promise<string | undefined> {
  const all = await listCheckpoints(dir);
  return all[all.length - 1];
}

/** `checkpoint-<step>` folders of `dir`, by step. */
export async function listCheckpoints(dir: string): Promise<string[]> {
  if (!(await exists(dir))) return [];
  const names = (await fs.readdir(dir)).filter((n) => CHECKPOINT_RE.test(n));
  return names.sort((a, b) => Number(CHECKPOINT_RE.exec(a)![1]) - Number(CHECKPOINT_RE.exec(b)![1])).map((n) => path.join(dir, n));
}

/** The trainer. `new Trainer(config).train()`, or {@link train}. */
export class Trainer {
  model!: MultiMeditronModel;
  private mm!: Multimeditron;
  private collator!: Collator;
  private loaderPool!: ModalityLoaderPool;
  private records: DataRecord[] = [];
  private params: NamedParameter[] = [];
  private optimizer!: Optimizer;
  private schedule!: LrSchedule;
  private cache: FeatureCache | undefined;
  private readonly errorsLogged = new Set<number>();
  private stream: StreamState = { epoch: 0, micro_step: 0, loss_since_log: 0, last_logged_step: 0, total_loss: 0, tokens_seen: 0, skipped: [] };
  private globalStep = 0;
  private logHistory: LogEntry[] = [];
  private microPerEpoch = 0;
  private stepsPerEpoch = 0;
  private maxSteps = 0;
  private saveEvery = 0;
  private logEvery = 0;
  private tokensPerPart = new Map<string, number>();
  /** Where the tokenizer files come from (base_llm's, else the model's). */
  private tokenizerDir: string | undefined;
  private readonly logger: Logger;

  constructor(readonly config: TrainConfig, private readonly options: TrainerOptions = {}) {
    this.logger = options.logger ?? options.mm?.logger ?? new ConsoleLogger();
  }

  /** Reads a YAML config and builds a trainer. */
  static async fromFile(file: string, options: TrainerOptions = {}): Promise<Trainer> {
    const logger = options.logger ?? options.mm?.logger ?? new ConsoleLogger();
    return new Trainer(await readTrainConfig(file, { warn: (m) => logger.warn(m) }), options);
  }

  private get args() {
    return this.config.training_args;
  }

  private get outputDir(): string {
    return this.args.output_dir;
  }

  // ---- set-up ------------------------------------------------------------------------------------------

  /** Which checkpoint to resume from, if any. */
  private async resumeDir(): Promise<string | undefined> {
    const r = this.config.resume_from_checkpoint;
    if (r === false || r === null) return undefined;
    if (typeof r === 'string') {
      if (!(await exists(path.join(r, TRAINER_STATE_FILE)))) {
        throw new TrainingError('E_CHECKPOINT', `resume_from_checkpoint: ${r} is not a trainer checkpoint (no ${TRAINER_STATE_FILE})`);
      }
      return r;
    }
    const last = await lastCheckpoint(this.outputDir);
    if (last) return last;
    if (this.config.base_model && (await exists(path.join(this.config.base_model, TRAINER_STATE_FILE)))) return this.config.base_model;
    throw new TrainingError('E_CHECKPOINT', `resume_from_checkpoint: true, but ${this.outputDir} holds no checkpoint-<step> folder`, {
      suggestions: ['Set resume_from_checkpoint: false to start a new run, or give the checkpoint folder.'],
    });
  }

  private async buildModel(resumeFrom: string | undefined): Promise<void> {
    const { config } = this;
    const from = resumeFrom ?? config.base_model ?? undefined;
    if (from) {
      this.model = await MultiMeditronModel.fromPretrained(from, { mm: this.mm });
    } else {
      const json: MultiMeditronConfigJSON = {
        model_type: 'multimodal',
        llm_path: config.base_llm,
        modalities: config.modalities.map((m) => ({ ...(config.token_size ? { hidden_size: config.token_size } : {}), ...m })),
        attachment_token: config.attachment_token,
        padding_side: 'right',
      };
      this.model = await MultiMeditronModel.fromConfig(json, { mm: this.mm, baseDir: config.baseDir });
    }
    const hidden = this.model.llm.config.hiddenSize;
    if (config.token_size !== null && config.token_size !== hidden) {
      this.model.dispose();
      throw new ConfigValidationError(config.source, [{ path: '/token_size', rule: 'const', message: `${config.token_size} is not the LLM's hidden_size (${hidden})` }]);
    }
    // base_llm's tokenizer is the one used (the original's rule); the checkpoint's own is the fallback
    let llmDir: string | undefined;
    try {
      llmDir = await this.mm.resolver.resolve(config.base_llm);
    } catch {
      llmDir = undefined;
    }
    this.tokenizerDir = llmDir && (await exists(path.join(llmDir, 'tokenizer.json'))) ? llmDir : this.model.tokenizerDir;
    if (!this.tokenizerDir) {
      throw new TrainingError('E_TOKENIZER', `no tokenizer.json in base_llm (${config.base_llm}) nor in ${from ?? 'the model'}: training needs the LLM's tokenizer files`);
    }
    this.collator = await Collator.fromFolder(this.tokenizerDir, {
      attachmentToken: config.attachment_token,
      paddingSide: 'right',
      ...(config.truncation && config.max_sequence_length ? { maxLength: config.max_sequence_length } : {}),
    });
  }

  private async readData(): Promise<void> {
    const types = this.model.modalities.map((m) => m.config.modalityType);
    let index = 0;
    for (const d of this.config.datasets) {
      for (const file of await datasetFiles(d.packed_path)) {
        for await (const rec of openDataset(file, { attachmentToken: this.config.attachment_token, modalityTypes: types })) {
          const i = index++;
          if (rec.sample) this.records.push({ index: i, line: rec.line, file: rec.file, baseDir: rec.baseDir, sample: rec.sample });
          else await this.logSampleError(i, rec.file, rec.line, rec.error?.kind ?? 'format', rec.error?.message ?? 'invalid sample');
        }
      }
    }
    if (this.records.length === 0) {
      throw new TrainingError('E_NO_DATA', `no valid sample in ${this.config.datasets.map((d) => d.packed_path).join(', ')} (see ${path.join(this.outputDir, 'errors.jsonl')})`);
    }
  }

  private planSteps(): void {
    const a = this.args;
    this.microPerEpoch = a.dataloader_drop_last
      ? Math.floor(this.records.length / a.per_device_train_batch_size)
      : Math.ceil(this.records.length / a.per_device_train_batch_size);
    if (this.microPerEpoch === 0) throw new TrainingError('E_NO_DATA', `${this.records.length} samples do not fill one batch of ${a.per_device_train_batch_size} with dataloader_drop_last`);
    this.stepsPerEpoch = Math.ceil(this.microPerEpoch / a.gradient_accumulation_steps);
    this.maxSteps = a.max_steps > 0 ? a.max_steps : Math.ceil(a.num_train_epochs * this.stepsPerEpoch);
    const frac = (v: number) => (v < 1 ? Math.ceil(this.maxSteps * v) : Math.floor(v));
    this.saveEvery = frac(a.save_steps);
    this.logEvery = frac(a.logging_steps);
    const warmup = a.warmup_steps > 0 ? a.warmup_steps : Math.ceil(this.maxSteps * a.warmup_ratio);
    this.schedule = createSchedule({ type: a.lr_scheduler_type, baseLr: a.learning_rate, totalSteps: this.maxSteps, warmupSteps: warmup, kwargs: a.lr_scheduler_kwargs, source: this.config.source });
  }

  private buildOptimizer(): void {
    const a = this.args;
    const groups = decayGroups(this.params, a.weight_decay);
    this.optimizer = a.optim === 'sgd'
      ? new SGD(groups)
      : new AdamW(groups, { beta1: a.adam_beta1, beta2: a.adam_beta2, eps: a.adam_epsilon });
  }

  // ---- data ----------------------------------------------------------------------------------------------

  private async logSampleError(index: number, file: string, line: number, kind: string, message: string): Promise<void> {
    if (!this.stream.skipped.includes(index)) this.stream.skipped.push(index);
    if (this.errorsLogged.has(index)) return;
    this.errorsLogged.add(index);
    await fs.mkdir(this.outputDir, { recursive: true });
    const entry = { index, file, line, kind, message: message.slice(0, 2000) };
    await fs.appendFile(path.join(this.outputDir, 'errors.jsonl'), `${JSON.stringify(entry)}\n`);
  }

  /** The loader options for one modality: the YAML's entry for its type when it fits the value (bytes/path). */
  private loaderSpecs(value: unknown): LoaderSpec[] {
    const kind = modalityValueKind(value)?.kind;
    return this.config.loaders.filter((l) => {
      if (l.loaderType.startsWith('raw-')) return kind === 'bytes';
      if (l.loaderType.startsWith('fs-')) return kind === 'path';
      return true;
    });
  }

  /**
   * Loads and processes a sample's modalities and gets the frozen encoders' outputs (from the cache or by running
   * them). Returns undefined (after logging the error) when anything fails.
   */
  private async prepareSample(rec: DataRecord): Promise<PreparedSample | undefined> {
    const encodersTrain = MODE_PARTS[this.config.training_mode].encoders;
    const mods: PreparedModality[] = [];
    try {
      for (const [j, input] of rec.sample.modalities.entries()) {
        const modality = this.model.modalityFor(input.type);
        const key = FeatureCache.key(rec.index, j);
        // a frozen encoder that splits off its projector: its output is computed once (and cached when there is a cache)
        const frozen = !encodersTrain && modality.canCacheFeatures;
        const features = frozen ? await this.cache?.get(key) : undefined;
        if (features) {
          mods.push({ modality, features, rows: features.shape[0]! * modality.projector.outputTokens(features.shape[1]!) });
          continue;
        }
        const raw = await this.loaderPool.load(input, { baseDir: rec.baseDir, loaders: this.loaderSpecs(input.value) });
        const parts = modality.processor.processAll({ type: input.type, value: raw }).map((p) => p.value);
        if (frozen) {
          const t = modality.projectorInputs(parts);
          const computed = { data: t.dataSync() as Float32Array, shape: [...t.shape] };
          t.dispose();
          await this.cache?.set(key, computed);
          mods.push({ modality, features: computed, rows: computed.shape[0]! * modality.projector.outputTokens(computed.shape[1]!) });
        } else {
          mods.push({ modality, parts, rows: parts.length * this.tokensPerInput(modality, parts) });
        }
      }
      const encoded = this.collator.encode(rec.sample, mods.map((m) => m.rows));
      if (!encoded.labels.some((l, t) => t > 0 && l !== -100)) throw new TrainingError('E_NO_LABELS', 'no token of this sample is labelled (nothing to learn; truncated away?)');
      if (encoded.inputIds.length > this.model.llm.config.maxPositionEmbeddings) {
        throw new TrainingError('E_TOO_LONG', `${encoded.inputIds.length} tokens once expanded; max_position_embeddings is ${this.model.llm.config.maxPositionEmbeddings} (set truncation and max_sequence_length)`);
      }
      return { rec, mods, encoded };
    } catch (e) {
      const kind = e instanceof MultimeditronError ? e.code : 'load';
      await this.logSampleError(rec.index, rec.file, rec.line, kind, (e as Error).message);
      return undefined;
    }
  }

  /** Embedding rows of one processed input of a trainable encoder (its shape is measured once per input shape). */
  private tokensPerInput(modality: BaseModality, parts: HostTensor[]): number {
    const key = `${this.model.modalities.indexOf(modality)}:${parts[0]!.shape.join('x')}`;
    let n = this.tokensPerPart.get(key);
    if (n === undefined) {
      const out = tf.tidy(() => modality.forward([parts[0]!]));
      n = out.shape[1];
      out.dispose();
      this.tokensPerPart.set(key, n);
    }
    return n;
  }

  // ---- one step ------------------------------------------------------------------------------------------

  /** Loss (already divided by the accumulation steps) and gradients of one micro-batch. */
  private microStep(samples: PreparedSample[]): { loss: number; grads: Map<string, tf.Tensor>; tokens: number } | undefined {
    const batch: CollatedBatch = this.collator.pad(samples.map((s) => s.encoded));
    const targets = lossTargets(batch.labels, batch.batchSize, batch.seqLength);
    if (targets.rows.length === 0) return undefined;
    const mask: number[][] = [];
    const pos: number[][] = [];
    for (let b = 0; b < batch.batchSize; b++) {
      mask.push(Array.from(batch.attentionMask.subarray(b * batch.seqLength, (b + 1) * batch.seqLength)));
      pos.push(Array.from(batch.positionIds.subarray(b * batch.seqLength, (b + 1) * batch.seqLength)));
    }
    const vars = this.params.map((p) => p.variable);
    const ga = this.args.gradient_accumulation_steps;
    const { value, grads } = tf.variableGrads(() => {
      const rows: tf.Tensor2D[] = batch.modalityRanges.map((r) => {
        const m = samples[r.batchIndex]!.mods[r.modalityIndex]!;
        const e = m.features
          ? m.modality.project(tf.tensor3d(m.features.data, m.features.shape as [number, number, number]))
          : m.modality.forward(m.parts!);
        return tf.reshape(e, [e.shape[0] * e.shape[1], e.shape[2]]) as tf.Tensor2D;
      });
      const embeds = mergeEmbeddings(this.model.llm.embedTokens as unknown as tf.Tensor2D, batch, rows);
      const { hiddenStates } = this.model.llm.forward({ inputsEmbeds: embeds, attentionMask: mask, positionIds: pos, logits: 'none' });
      return causalLmLoss(hiddenStates, targets, (h) => this.model.llm.headLogits(h), ga)!;
    }, vars);
    const loss = value.dataSync()[0]!;
    value.dispose();
    const byName = new Map<string, tf.Tensor>();
    for (const p of this.params) {
      const g = grads[p.variable.name];
      // a parameter the loss does not reach (e.g. an unused modality) gets a zero gradient, as torch leaves None -> skipped
      byName.set(p.name, g ?? tf.zerosLike(p.variable));
    }
    return { loss, grads: byName, tokens: batch.lengths.reduce((a, b) => a + b, 0) };
  }

  // ---- checkpoints -----------------------------------------------------------------------------------

  private trainerState(): TrainerStateJSON {
    return {
      global_step: this.globalStep,
      max_steps: this.maxSteps,
      epoch: this.stream.epoch + this.stream.micro_step / this.microPerEpoch,
      num_train_epochs: Math.ceil(this.maxSteps / this.stepsPerEpoch),
      logging_steps: this.logEvery,
      save_steps: this.saveEvery,
      train_batch_size: this.args.per_device_train_batch_size,
      log_history: this.logHistory,
      best_metric: null,
      best_model_checkpoint: null,
      is_local_process_zero: true,
      is_world_process_zero: true,
      is_hyper_param_search: false,
      num_input_tokens_seen: this.stream.tokens_seen,
      total_flos: 0,
      trial_name: null,
      trial_params: null,
      stateful_callbacks: {},
      multimeditron: { ...this.stream, mode: this.config.training_mode, seed: this.args.seed, dataset_size: this.records.length },
    };
  }

  /** Writes `checkpoint-<step>` atomically (a temporary folder renamed into place), then applies `save_total_limit`. */
  async saveCheckpoint(): Promise<string> {
    const dir = path.join(this.outputDir, `checkpoint-${this.globalStep}`);
    const tmp = path.join(this.outputDir, `.checkpoint-${this.globalStep}.tmp-${process.pid}`);
    await fs.rm(tmp, { recursive: true, force: true });
    if (this.model.llm.config.tieWordEmbeddings && this.model.llm.embedTokens.trainable) this.model.llm.refreshTiedHead();
    await this.model.savePretrained(tmp);
    // the tokenizer the run used travels with the checkpoint
    for (const f of TOKENIZER_FILES) {
      const from = this.tokenizerDir ? path.join(this.tokenizerDir, f) : undefined;
      if (from && !(await exists(path.join(tmp, f))) && (await exists(from))) await fs.copyFile(from, path.join(tmp, f));
    }
    const state = this.optimizer.getState();
    await writeSafetensors(path.join(tmp, OPTIMIZER_FILE), state.tensors, { format: 'multimeditron' });
    await writeJson(path.join(tmp, OPTIMIZER_STATE_FILE), { kind: state.kind, step: state.step, hyper: state.hyper });
    await writeJson(path.join(tmp, SCHEDULER_FILE), { type: this.schedule.type, base_lr: this.schedule.baseLr, warmup_steps: this.schedule.warmupSteps, total_steps: this.schedule.totalSteps, last_epoch: this.globalStep, last_lr: [this.schedule.lrAt(this.globalStep)] });
    await writeJson(path.join(tmp, TRAINING_CONFIG_FILE), { ...this.config, ignored: undefined });
    await writeJson(path.join(tmp, TRAINER_STATE_FILE), this.trainerState());
    if (await exists(dir)) {
      const old = `${dir}.old-${process.pid}`;
      await fs.rename(dir, old);
      await fs.rename(tmp, dir);
      await fs.rm(old, { recursive: true, force: true });
    } else {
      await fs.rename(tmp, dir);
    }
    const limit = this.args.save_total_limit;
    if (limit) {
      const all = await listCheckpoints(this.outputDir);
      for (const d of all.slice(0, Math.max(0, all.length - limit))) await fs.rm(d, { recursive: true, force: true });
    }
    await this.drawPlots();
    this.options.onSave?.(dir);
    return dir;
  }

  private async restore(dir: string): Promise<void> {
    const state = JSON.parse(await fs.readFile(path.join(dir, TRAINER_STATE_FILE), 'utf8')) as TrainerStateJSON;
    const mine = state.multimeditron;
    if (!mine) throw new TrainingError('E_CHECKPOINT', `${dir}: ${TRAINER_STATE_FILE} has no "multimeditron" section (not written by this trainer)`);
    if (mine.mode !== this.config.training_mode) {
      throw new TrainingError('E_CHECKPOINT', `${dir} was written in ${mine.mode} mode; the config asks for ${this.config.training_mode}`);
    }
    if (mine.dataset_size !== this.records.length) {
      throw new TrainingError('E_CHECKPOINT', `${dir} was written on ${mine.dataset_size} valid samples; the datasets now have ${this.records.length}`);
    }
    const meta = JSON.parse(await fs.readFile(path.join(dir, OPTIMIZER_STATE_FILE), 'utf8')) as Omit<OptimizerState, 'tensors'>;
    const tensors = new Map<string, { data: Float32Array; shape: number[] }>();
    const file = path.join(dir, OPTIMIZER_FILE);
    if (await exists(file)) {
      for (const [k, t] of (await readSafetensors(file)).tensors) tensors.set(k, { data: t.data as Float32Array, shape: t.shape });
    }
    this.optimizer.setState({ ...meta, tensors });
    this.globalStep = state.global_step;
    this.logHistory = state.log_history;
    this.stream = { ...mine, skipped: [...mine.skipped] };
    if (state.max_steps !== this.maxSteps) this.logger.warn(`${dir}: the run was planned for ${state.max_steps} steps; continuing to ${this.maxSteps}`);
  }

  private async drawPlots(): Promise<void> {
    if (this.options.plots === false) return;
    if (!this.logHistory.some((e) => e.loss !== undefined || e.learning_rate !== undefined)) return;
    try {
      await writeTrainingPlots(this.outputDir, this.logHistory);
    } catch (e) {
      this.logger.warn(`could not draw the training plots: ${(e as Error).message}`);
    }
  }

  // ---- the loop ----------------------------------------------------------------------------------------

  /** Runs the training (or the rest of it, when resuming). */
  async train(): Promise<TrainResult> {
    const started = Date.now();
    this.mm = this.options.mm ?? (await createMultimeditron({ logger: this.logger }));
    ensureGradients();
    await fs.mkdir(this.outputDir, { recursive: true });
    await loadLoggedErrors(path.join(this.outputDir, 'errors.jsonl'), this.errorsLogged);
    const resumeFrom = await this.resumeDir();
    await this.buildModel(resumeFrom);
    try {
      this.loaderPool = new ModalityLoaderPool(this.mm.loaders);
      await this.readData();
      this.params = applyTrainingMode(this.model, this.config.training_mode);
      this.model.llm.training = true;
      if (this.params.length === 0) throw new TrainingError('E_NOTHING_TO_TRAIN', `${this.config.training_mode} leaves no trainable parameter in this model`);
      this.planSteps();
      this.buildOptimizer();
      if (this.options.featureCache !== false && !MODE_PARTS[this.config.training_mode].encoders) {
        this.cache = new FeatureCache({ maxMemoryBytes: this.options.featureCacheBytes ?? 1024 ** 3, dir: path.join(this.outputDir, 'feature-cache') });
      }
      if (resumeFrom) {
        await this.restore(resumeFrom);
        this.logger.info(`resuming from ${resumeFrom} at step ${this.globalStep} (epoch ${this.stream.epoch}, micro-batch ${this.stream.micro_step})`);
        this.options.onResume?.({ dir: resumeFrom, step: this.globalStep, epoch: this.stream.epoch, microStep: this.stream.micro_step });
      }
      return await this.loop(started);
    } finally {
      await this.cache?.clear();
    }
  }

  private async loop(started: number): Promise<TrainResult> {
    const a = this.args;
    const B = a.per_device_train_batch_size;
    const GA = a.gradient_accumulation_steps;
    const checkpoints: string[] = [];
    let stopped = false;
    let stepTimeSum = 0;
    let stepsThisRun = 0;
    let order = epochOrder(this.records.length, a.seed, this.stream.epoch);
    const metricsFile = path.join(this.outputDir, 'metrics.jsonl');
    const t0 = Date.now();
    let tokensThisRun = 0;
    while (this.globalStep < this.maxSteps) {
      if (this.options.signal?.aborted) {
        stopped = true;
        break;
      }
      const stepStart = Date.now();
      const lr = this.schedule.lrAt(this.globalStep);
      let acc: Map<string, tf.Tensor> | undefined;
      let stepLoss = 0;
      let stepTokens = 0;
      let micro = 0;
      // one optimizer step: GA micro-batches, or what is left of the epoch
      while (micro < GA && this.stream.micro_step < this.microPerEpoch) {
        const ids = order.slice(this.stream.micro_step * B, (this.stream.micro_step + 1) * B);
        const prepared: PreparedSample[] = [];
        for (const i of ids) {
          const p = await this.prepareSample(this.records[i]!);
          if (p) prepared.push(p);
        }
        this.stream.micro_step++;
        micro++;
        if (!prepared.length) continue;
        const r = this.microStep(prepared);
        if (!r) continue;
        if (!Number.isFinite(r.loss)) {
          for (const g of r.grads.values()) g.dispose();
          acc?.forEach((g) => g.dispose());
          throw new TrainingError('E_NAN_LOSS', `the loss is ${r.loss} at step ${this.globalStep + 1} (epoch ${this.stream.epoch}, samples ${prepared.map((p) => `${p.rec.file}:${p.rec.line}`).join(', ')}); the last good checkpoint is kept`, {
            suggestions: ['Lower learning_rate, set max_grad_norm, or check the samples named above.'],
          });
        }
        stepLoss += r.loss;
        stepTokens += r.tokens;
        if (!acc) acc = r.grads;
        else {
          for (const [k, g] of r.grads) {
            const prev = acc.get(k)!;
            acc.set(k, tf.add(prev, g));
            prev.dispose();
            g.dispose();
          }
        }
      }
      const epochEnded = this.stream.micro_step >= this.microPerEpoch;
      let gradNorm = 0;
      if (acc) {
        const clipped = clipGradNorm(acc, a.max_grad_norm);
        gradNorm = clipped.norm;
        this.optimizer.step(clipped.grads, lr);
        for (const g of clipped.grads.values()) g.dispose();
      } else {
        this.logger.warn(`step ${this.globalStep + 1}: no usable sample in its micro-batches; no update`);
      }
      this.globalStep++;
      this.stream.loss_since_log += stepLoss;
      this.stream.total_loss += stepLoss;
      this.stream.tokens_seen += stepTokens;
      tokensThisRun += stepTokens;
      if (epochEnded) {
        this.stream.epoch++;
        this.stream.micro_step = 0;
        order = epochOrder(this.records.length, a.seed, this.stream.epoch);
      }
      const epoch = this.stream.epoch + this.stream.micro_step / this.microPerEpoch;
      stepTimeSum += Date.now() - stepStart;
      stepsThisRun++;
      const meanStep = stepTimeSum / stepsThisRun;
      const elapsed = (Date.now() - t0) / 1000;
      this.options.onStep?.({
        step: this.globalStep, maxSteps: this.maxSteps, epoch, loss: stepLoss, learningRate: lr, gradNorm, tokens: stepTokens,
        tokensPerSecond: elapsed > 0 ? tokensThisRun / elapsed : 0, etaSeconds: ((this.maxSteps - this.globalStep) * meanStep) / 1000,
        skippedSamples: this.stream.skipped.length,
      });
      const shouldLog = a.logging_strategy === 'steps'
        ? this.globalStep % this.logEvery === 0 || (a.logging_first_step && this.globalStep === 1)
        : a.logging_strategy === 'epoch' && epochEnded;
      if (shouldLog) {
        const steps = this.globalStep - this.stream.last_logged_step;
        const entry: LogEntry = { loss: this.stream.loss_since_log / steps, grad_norm: gradNorm, learning_rate: lr, epoch, step: this.globalStep };
        this.logHistory.push(entry);
        this.stream.loss_since_log = 0;
        this.stream.last_logged_step = this.globalStep;
        await fs.appendFile(metricsFile, `${JSON.stringify({ ...entry, tokens: stepTokens, tokens_per_second: elapsed > 0 ? tokensThisRun / elapsed : 0, time: new Date().toISOString() })}\n`);
        this.options.onLog?.(entry);
      }
      const last = this.globalStep >= this.maxSteps;
      const shouldSave = a.save_strategy === 'steps' ? this.globalStep % this.saveEvery === 0 || last : a.save_strategy === 'epoch' && (epochEnded || last);
      if (shouldSave) checkpoints.push(await this.saveCheckpoint());
      await this.options.afterStep?.(this.globalStep);
      if (this.options.signal?.aborted && !last) {
        if (!shouldSave) checkpoints.push(await this.saveCheckpoint());
        stopped = true;
        break;
      }
    }
    const runtime = (Date.now() - started) / 1000;
    const trainLoss = this.globalStep ? this.stream.total_loss / this.globalStep : 0;
    if (!stopped) {
      const summary: LogEntry = {
        train_runtime: runtime, train_samples_per_second: (this.globalStep * B * GA) / runtime, train_steps_per_second: this.globalStep / runtime,
        total_flos: 0, train_loss: trainLoss, epoch: this.stream.epoch + this.stream.micro_step / this.microPerEpoch, step: this.globalStep,
      };
      this.logHistory.push(summary);
      this.options.onLog?.(summary);
      await this.drawPlots();
    }
    const kept = await listCheckpoints(this.outputDir);
    const stats = this.cache?.stats();
    return {
      globalStep: this.globalStep, maxSteps: this.maxSteps, trainLoss, logHistory: this.logHistory,
      checkpoints: kept.length ? kept : checkpoints, skippedSamples: this.stream.skipped.length, stopped, runtime,
      featureCache: { hits: stats?.hits ?? 0, misses: stats?.misses ?? 0 },
    };
  }

  /** Releases the model. */
  dispose(): void {
    this.optimizer?.dispose();
    this.model?.dispose();
  }
}

interface PreparedModality {
  modality: BaseModality;
  /** Projector input (frozen encoder), when it was computed once. */
  features?: { data: Float32Array; shape: number[] };
  /** Processed inputs (trainable encoder). */
  parts?: HostTensor[];
  /** Embedding rows it fills. */
  rows: number;
}

interface PreparedSample {
  rec: DataRecord;
  mods: PreparedModality[];
  encoded: EncodedSample;
}

async function writeJson(file: string, value: unknown): Promise<void> {
  await fs.writeFile(file, `${JSON.stringify(value, null, 2)}\n`);
}

async function loadLoggedErrors(file: string, into: Set<number>): Promise<void> {
  if (!(await exists(file))) return;
  for (const line of (await fs.readFile(file, 'utf8')).split('\n')) {
    if (!line.trim()) continue;
    try {
      const i = (JSON.parse(line) as { index?: unknown }).index;
      if (typeof i === 'number') into.add(i);
    } catch {
      // a torn last line (killed mid-write) is ignored
    }
  }
}

/** The dataset files of a `packed_path`: a file, a Hugging Face `save_to_disk` folder, or a folder of .jsonl/.parquet files. */
export async function datasetFiles(p: string): Promise<string[]> {
  const st = await fs.stat(p).catch((e: Error) => {
    throw new TrainingError('E_DATASET', `datasets: ${p} cannot be read: ${e.message}`);
  });
  if (!st.isDirectory()) return [p];
  if (isHfDatasetDir(p)) return [p];
  const files = (await fs.readdir(p)).filter((f) => /\.(jsonl|ndjson|parquet|pq)$/i.test(f)).sort();
  if (!files.length) throw new TrainingError('E_DATASET', `datasets: ${p} holds no .jsonl or .parquet file`);
  return files.map((f) => path.join(p, f));
}

/** Reads a YAML config (or takes a parsed one) and trains. The model is released at the end. */
export async function train(config: string | TrainConfig, options: TrainerOptions = {}): Promise<TrainResult> {
  const trainer = typeof config === 'string' ? await Trainer.fromFile(config, options) : new Trainer(config, options);
  try {
    return await trainer.train();
  } finally {
    trainer.dispose();
  }
}
